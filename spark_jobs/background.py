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


class Ahead(Generic[S, T]):
    """Work started ahead of a decision that may still call it off: `fn` runs on a daemon thread once `first`
    (work of its own, such as Spark's start) is done, unless `call_off` came before. `call_off` returns at once
    when `fn` has not started, else once it has ended, so that the process may exit without cutting it short
    (a metastore being created in Derby on a first run must not be killed halfway)."""

    def __init__(self, first: Background[S], fn: Callable[[S], T], name: str) -> None:
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "running" -> "ended", or -> "off"
        self._ended = threading.Event()
        self._result: Background[T | None] = Background(lambda: self._run(first, fn), name)

    def _run(self, first: Background[S], fn: Callable[[S], T]) -> T | None:
        try:
            made = first.result()
            with self._lock:
                if self._state == "off":
                    return None
                self._state = "running"
            return fn(made)
        finally:
            self._ended.set()

    def call_off(self) -> None:
        with self._lock:
            running = self._state == "running"
            if self._state == "waiting":
                self._state = "off"
        if running:
            self._ended.wait()

    def result(self) -> T | None:
        """`fn`'s value (or its error); None once called off."""
        return self._result.result()


def each(fn: Callable[[S], T], items: Sequence[S], threads: int = 8) -> list[T]:
    """`fn` over `items` on a few threads, results in order: for many small calls into the JVM (a file's
    status, a Parquet footer), each a round trip of latency rather than work, which threads overlap."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="score-table-io") as pool:
        return list(pool.map(fn, items))
