"""Processes as /proc shows them (Linux), for the benchmarks and the tests that follow a service's children:
a process tree, its CPU (those already gone included), and whether a process still runs."""
from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] is the state, [1] the parent, [11:15] the CPU ticks."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """CPU seconds of the process itself (user and system)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_tree(root: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """`root` and all its descendants, but `exclude` and theirs."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in exclude:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_cpu(root: int, exclude: frozenset[int] = frozenset()) -> float:
    """CPU seconds of a process tree, the descendants already gone included (in their parents' cutime)."""
    total = 0
    for pid in process_tree(root, exclude):
        try:
            fields = stat_fields(pid)
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def pids_named(name: str) -> list[int]:
    """Every process whose command name is `name` (`postgres`, `redis-server`, `beam.smp`...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and comm(int(entry.name)) == name:
            found.append(int(entry.name))
    return found


def named_cpu(name: str) -> float:
    """CPU seconds so far of every process named `name` (a database or broker server, which a benchmark
    has to itself)."""
    total = 0.0
    for pid in pids_named(name):
        try:
            total += process_cpu(pid)
        except (OSError, IndexError):
            continue
    return total


def rss_mib(pid: int, peak: bool = False) -> float:
    """The process's resident memory now (VmRSS) or at its peak (VmHWM), in MiB; 0 once it is gone."""
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
