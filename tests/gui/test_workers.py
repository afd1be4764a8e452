"""Workers: engine work off the GUI thread, results/errors back as signals on the GUI thread."""
from __future__ import annotations

import threading

import pytest

from allblast_gui.workers import GeneratorWorker, TaskRunner
from engine.learn.events import AskContinue, Continue, Halt


@pytest.fixture
def runner(qapp):
    r = TaskRunner()
    yield r
    assert r.shutdown(10_000)


def test_function_result_and_progress_arrive_on_the_gui_thread(qtbot, runner):
    gui = threading.get_ident()
    seen = []

    def work(n, progress):
        for i in range(n):
            progress(i, n)
        return threading.get_ident()

    worker = runner.run(work, 3, progress_arg="progress")
    worker.progress.connect(lambda v: seen.append((v, threading.get_ident())))
    results = []
    worker.result.connect(results.append)
    with qtbot.waitSignals([worker.result, worker.finished], order="strict", timeout=5000):
        pass
    assert results[0] != gui  # the work ran on a pool thread
    assert [v for v, _ in seen] == [(0, 3), (1, 3), (2, 3)]
    assert all(t == gui for _, t in seen)


def test_errors_cross_threads_as_signals_and_their_traceback_is_logged(qtbot, runner, caplog):
    def boom():
        raise ValueError("bad folder")

    worker = runner.run(boom)
    with qtbot.waitSignal(worker.error, timeout=5000) as blocker:
        pass
    assert isinstance(blocker.args[0], ValueError) and "bad folder" in str(blocker.args[0])
    logged = [r for r in caplog.records if r.name == "allblast_gui.workers" and r.exc_info]
    assert logged and "boom" in logged[0].getMessage()
    assert "raise ValueError" in caplog.text  # the traceback itself


def test_engine_warnings_arrive_as_a_signal_of_the_worker_that_raised_them(qtbot, runner, caplog):
    from engine.utils.logs import warn

    def work():
        warn("class hem has only 1 patient")
        return 1

    worker = runner.run(work)
    warned = []
    worker.warned.connect(warned.append)
    with qtbot.waitSignals([worker.warned, worker.result], order="strict", timeout=5000):
        pass
    assert warned == ["class hem has only 1 patient"]
    assert "class hem has only 1 patient" in caplog.text  # and the log keeps it too


def test_collect_warnings_on_the_gui_thread():
    from allblast_gui.workers import collect_warnings
    from engine.utils.logs import warn

    with collect_warnings() as texts:
        warn("first")
        warn("first")  # said twice, shown twice: not swallowed by Python's once-per-place rule
    assert texts == ["first", "first"]
    with collect_warnings() as later:
        pass
    assert later == []


def test_a_newer_submission_makes_the_older_stale(qtbot, runner):
    gate = threading.Event()
    results, stale = [], []

    def slow(tag):
        gate.wait(5)
        return tag

    first = runner.run(slow, "first", key="open")
    first.result.connect(results.append)
    first.stale_result.connect(stale.append)
    second = runner.run(slow, "second", key="open")
    second.result.connect(results.append)
    gate.set()
    qtbot.waitUntil(lambda: first.is_done and second.is_done, timeout=5000)
    assert results == ["second"] and stale == ["first"]


def test_generator_worker_asks_the_gui_for_decisions(qtbot, runner):
    def job():
        decision = yield AskContinue(epoch=1, best_epoch=1, best_metric=0.5, suggested_epochs=2)
        yield ("decided", decision)
        return "done"

    worker = GeneratorWorker(job(), needs_answer=lambda e: isinstance(e, AskContinue))
    events = []
    worker.progress.connect(events.append)
    worker.progress.connect(lambda e: worker.answer(Continue(2)) if isinstance(e, AskContinue) else None)
    runner.submit(worker)
    with qtbot.waitSignal(worker.result, timeout=5000) as blocker:
        pass
    assert blocker.args[0] == "done"
    assert events[1] == ("decided", Continue(2))


def test_discarding_a_generator_stops_it(qtbot, runner):
    def forever():
        while True:
            decision = yield AskContinue(1, 1, 0.5, 1)
            if decision is None or isinstance(decision, Halt):
                return "halted"

    worker = GeneratorWorker(forever(), needs_answer=lambda e: True)
    runner.submit(worker)
    worker.discard()
    qtbot.waitUntil(lambda: worker.is_done, timeout=5000)
