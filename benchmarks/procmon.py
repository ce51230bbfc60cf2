"""Peak memory of a spark-submit's processes, sampled: the driver JVM (executors live in it in local mode),
the driver's Python, and the Python workers (forked from pyspark.daemon)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil


@dataclass
class Peaks:
    jvm_mb: float = 0.0
    driver_python_mb: float = 0.0
    worker_mb: float = 0.0  # the largest single Python worker
    workers_total_mb: float = 0.0  # all Python workers at one instant


class Monitor:
    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except psutil.Error:
                continue

    def _sample(self) -> None:
        jvm = driver = total = biggest = 0.0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                cmd = " ".join(proc.cmdline())
                rss = proc.memory_info().rss / 2**20
                parent = proc.parent()
                parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
            except psutil.Error:
                continue
            if proc.name() == "java":
                jvm += rss
            elif "pyspark.daemon" in cmd:
                if "pyspark.daemon" in parent_cmd:  # a forked worker, not the daemon itself
                    total += rss
                    biggest = max(biggest, rss)
            elif "python" in proc.name() or cmd.endswith(".py") or ".py " in cmd:
                driver = max(driver, rss)
        p = self.peaks
        p.jvm_mb, p.driver_python_mb = max(p.jvm_mb, jvm), max(p.driver_python_mb, driver)
        p.worker_mb, p.workers_total_mb = max(p.worker_mb, biggest), max(p.workers_total_mb, total)
