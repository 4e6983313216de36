"""Who used the machine's CPUs while a benchmark side trained: the training process, and everything else.

A wall-clock rate on a shared 2-core VM moves by 10-20% between identical runs; CPU seconds per process, read from
/proc, say more steadily where the cores went. `CpuSampler` reads every process's CPU time once a second in a thread
of the benchmark (about 1% of a core), so that processes which exit before the end (Ray Train's worker does) are
counted up to their last sample. Linux only: elsewhere it records nothing and `share` returns None.
"""

from __future__ import annotations

import os
import threading
import time

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds() -> dict[int, float]:
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            out[int(pid)] = (int(fields[11]) + int(fields[12])) / HZ  # utime + stime
    return out


def _name(pid: int) -> str:
    try:
        cmd = [c for c in open(f"/proc/{pid}/cmdline").read().split("\0") if c]
        comm = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return "?"
    if not cmd:  # a kernel thread
        return comm
    first = cmd[0].split()[0]
    if "/" not in first:  # a title Ray gave its process: "ray::IDLE", "ray::RayTrainWorker", "ray-dashboard-..."
        return first
    return os.path.basename(next((c for c in cmd if c.endswith(".py")), first))  # a program: its file's name


class CpuSampler:
    def __init__(self, interval: float = 1.0):
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def __enter__(self):
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self, interval: float):
        while True:
            cpu = _cpu_seconds()
            prev = self.samples[-1][1] if self.samples else {}
            self.samples.append((time.monotonic(), cpu))
            for pid, seconds in cpu.items():
                # read again while a process works: Ray gives a worker its "ray::Class" title after it started
                if pid not in self.names or seconds > prev.get(pid, 0.0):
                    name = _name(pid)
                    if name != "?" or pid not in self.names:  # one gone between the reads keeps its name
                        self.names[pid] = name
            if self._stop.wait(interval):
                break

    def share(self, seconds: float) -> dict | None:
        """Cores used over the last `seconds` of the training process's work (the process with the most CPU; its
        work ends at its last sample that grew): {"training": cores, "others": cores, "processes": how many others ran,
        "top": the six largest [(name, cores)]}."""
        if len(self.samples) < 3:
            return None
        first, last = self.samples[0][1], _latest(self.samples)  # Ray Train's worker exits before the end
        train = max(last, key=lambda p: last[p] - first.get(p, 0.0))
        end = max(i for i in range(1, len(self.samples))
                  if self.samples[i][1].get(train, 0) > self.samples[i - 1][1].get(train, 0))
        t_end = self.samples[end][0]
        start = min((i for i, (t, _) in enumerate(self.samples) if t >= t_end - seconds), default=0)
        t0, a = self.samples[start]
        b = _latest(self.samples[start:end + 1])  # Ray's actors may exit before the window's end
        span = t_end - t0
        used = {p: b[p] - a.get(p, 0.0) for p in b}
        others = {p: c for p, c in used.items() if p != train and c > 0}
        by_name: dict[str, float] = {}
        for p, c in others.items():
            by_name[self.names.get(p, "?")] = by_name.get(self.names.get(p, "?"), 0.0) + c / span
        return {"training": used[train] / span, "others": sum(others.values()) / span, "span": span,
                "processes": len(others),
                "top": sorted(by_name.items(), key=lambda kv: -kv[1])[:6]}


def _latest(samples: list[tuple[float, dict[int, float]]]) -> dict[int, float]:
    """Each process's CPU seconds at its last sample among `samples`."""
    out: dict[int, float] = {}
    for _, cpu in samples:
        out.update(cpu)
    return out
