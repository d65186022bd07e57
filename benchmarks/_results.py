"""One row per benchmark run in benchmarks/RESULTS.md: date, benchmark, machine, parameters, the JSON printed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record(benchmark: str, parameters: str, result: dict[str, Any]) -> None:
    with open(RESULTS, "a") as f:
        f.write(
            f"| {datetime.now(UTC):%Y-%m-%d} | {benchmark} | {os.cpu_count()} cores | "
            f"{parameters} | {json.dumps(result)} |\n"
        )
