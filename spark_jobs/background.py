"""Work started on a daemon thread whose result is taken later: the run's fixed costs (Spark's start, the
run-history row) overlap the work that does not depend on them, and the process may still end (a usage error
found meanwhile) without waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

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
