"""Reads CPU time, memory and disk of every process of a cluster (psutil), for the cost model."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from services.cluster.state import ClusterState


def cluster_processes(state: ClusterState) -> list[psutil.Process]:
    processes: list[psutil.Process] = []
    for component in state.components:
        if not component.pid:
            continue
        try:
            root = psutil.Process(component.pid)
            processes += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return processes


def cpu_seconds(state: ClusterState) -> dict[int, float]:
    """User + system CPU seconds per PID (a later sample minus an earlier one gives the use)."""
    seen: dict[int, float] = {}
    for process in cluster_processes(state):
        try:
            times = process.cpu_times()
            seen[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seen


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples by the processes alive in both (PostgreSQL
    backends come and go; their spending while alive is counted by their parent's children)."""
    return sum(max(0.0, after[pid] - before[pid]) for pid in before.keys() & after.keys())


def memory_bytes(state: ClusterState) -> int:
    total = 0
    for process in cluster_processes(state):
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def disk_bytes(state: ClusterState) -> int:
    total = 0
    for folder in ("pg", "zookeeper", "redis"):
        root = (state.home / folder).resolve()
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    total += (Path(dirpath) / name).stat().st_size
                except OSError:
                    continue
    return total
