"""One row per benchmark run in benchmarks/RESULTS.md: date, benchmark, machine, parameters, the JSON printed.

The machine column names the Python the services ran on (the benchmark's own, whose ``sys.executable`` starts
them): on this box the services took about 9% more CPU on a pyenv build without PGO than on Debian's python3.11
(docs/scheduler.md), so figures are comparable only on the same one."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record(benchmark: str, parameters: str, result: dict[str, Any]) -> None:
    with open(RESULTS, "a") as f:
        f.write(
            f"| {datetime.now(UTC):%Y-%m-%d} | {benchmark} | {os.cpu_count()} cores, "
            f"Python {platform.python_version()} from {sys.base_prefix} | "
            f"{parameters} | {json.dumps(result)} |\n"
        )
