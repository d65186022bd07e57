"""Where the CPU goes during a benchmark: CPU seconds per component (a process and all its descendants).

meter = CpuMeter({"api": [api_pid], "postgres": [pg_pid], ...})
before = meter.sample()
... the measured phase ...
spent = meter.since(before)          # {"api": 1.93, "postgres": 2.41, ..., "total": 9.7}
"""

from __future__ import annotations

import psutil


class CpuMeter:
    def __init__(self, components: dict[str, list[int | None]]) -> None:
        self.components = {name: [p for p in pids if p] for name, pids in components.items()}

    @staticmethod
    def _tree_seconds(pid: int) -> float:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def sample(self) -> dict[str, float]:
        """Cumulative CPU seconds per component (descendants that already exited are not counted)."""
        return {name: sum(self._tree_seconds(pid) for pid in pids) for name, pids in self.components.items()}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.sample()
        spent = {name: round(now[name] - before.get(name, 0.0), 2) for name in now}
        spent["total"] = round(sum(spent.values()), 2)
        return spent
