"""CPU to write and read the RPC bodies of one boot: the standard library's ``json`` against ``common.jsonutils``
(orjson), which the services use.

The bodies in ``benchmarks/data/wire`` were captured from a boot on a test cloud (a build request, the build
cast, the conductor update that ends the build, a capacity report); each is written once and read once per boot.
Prints microseconds per body and for the four together, JSON on the last line. ``--record`` appends to RESULTS.md.

    python -m benchmarks.json_wire
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import record  # noqa: E402
from common import jsonutils  # noqa: E402

BODIES = ("build_instances", "build_and_run_instance", "instance_update", "update_capacity")


def _us(fn: object, number: int) -> float:
    """The best of five runs of ``number`` calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def measure(number: int) -> dict:
    out: dict = {"bodies": {}}
    for name in BODIES:
        value = json.loads((ROOT / "benchmarks" / "data" / "wire" / f"{name}.json").read_text())
        wire = jsonutils.dumps(value)
        stdlib = _us(lambda v=value: json.dumps(v, default=str).encode(), number) + _us(
            lambda w=wire: json.loads(w), number
        )
        fast = _us(lambda v=value: jsonutils.dumps(v), number) + _us(lambda w=wire: jsonutils.loads(w), number)
        out["bodies"][name] = {"bytes": len(wire), "stdlib_us": round(stdlib, 1), "orjson_us": round(fast, 1)}
    out["stdlib_us"] = round(sum(b["stdlib_us"] for b in out["bodies"].values()), 1)
    out["orjson_us"] = round(sum(b["orjson_us"] for b in out["bodies"].values()), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--number", type=int, default=2000, help="calls per timing run")
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    result = measure(args.number)
    for name, b in result["bodies"].items():
        print(f"{name:24s} {b['bytes']:5d} B  json {b['stdlib_us']:6.1f} us  orjson {b['orjson_us']:5.1f} us")
    if args.record:
        record("json_wire.py", f"number={args.number}", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
