"""Work started on a daemon thread whose result is taken later: the run's fixed costs (Spark's start, the
run-history row) overlap the work that does not depend on them, and the process may still end (a usage error
found meanwhile) without waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")


class Background(Generic[T]):
    """`fn` run on a daemon thread; `result()` waits and returns its value or raises its error."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._future: Future[T] = Future()
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._future.set_result(fn())
        except BaseException as e:  # handed to whoever waits for the result
            self._future.set_exception(e)

    def result(self) -> T:
        return self._future.result()


def each(fn: Callable[[S], T], items: Sequence[S], threads: int = 8) -> list[T]:
    """`fn` over `items` on a few threads, results in order: for many small calls into the JVM (a file's
    status, a Parquet footer), each a round trip of latency rather than work, which threads overlap."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="score-table-io") as pool:
        return list(pool.map(fn, items))
