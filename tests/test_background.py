"""Work started ahead of the run's decisions (spark_jobs.background): the CLI reads the input table from the
metastore while the model still resolves, and a model that fails must neither start that read nor exit in
the middle of it (a first run's Derby metastore is created by it)."""

from __future__ import annotations

import threading
import time

import pytest

from spark_jobs.background import Ahead, Background

pytestmark = pytest.mark.spark35  # no Spark session: cheap on both lines


def test_ahead_runs_once_its_first_step_is_done_and_gives_the_result() -> None:
    started = threading.Event()
    first = Background(lambda: started.wait(5) and 20, "first")
    ahead = Ahead(first, lambda n: n + 1, "ahead")
    started.set()
    assert ahead.result() == 21


def test_ahead_called_off_before_its_first_step_is_done_never_runs() -> None:
    release, ran = threading.Event(), []
    first = Background(lambda: release.wait(5), "first")
    ahead = Ahead(first, ran.append, "ahead")
    began = time.monotonic()
    ahead.call_off()  # returns at once: nothing has started
    assert time.monotonic() - began < 1
    release.set()
    assert ahead.result() is None
    assert ran == []


def test_ahead_called_off_while_running_returns_once_it_has_ended() -> None:
    running, release, ended = threading.Event(), threading.Event(), []

    def work(_: object) -> str:
        running.set()
        release.wait(5)
        time.sleep(0.2)
        ended.append(True)
        return "read"

    ahead = Ahead(Background(lambda: None, "first"), work, "ahead")
    assert running.wait(5)
    threading.Timer(0.1, release.set).start()
    ahead.call_off()
    assert ended == [True]  # not cut short
    assert ahead.result() == "read"


def test_ahead_hands_its_error_to_whoever_takes_the_result() -> None:
    def fails(_: object) -> None:
        raise LookupError("no such table")

    ahead = Ahead(Background(lambda: None, "first"), fails, "ahead")
    with pytest.raises(LookupError, match="no such table"):
        ahead.result()
    ahead.call_off()  # ended: returns at once

