"""One sitting in the window, phase by phase: is the GUI thread ever blocked (issue 28)?

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_flow.py [--runs 3] [--trace-stalls]

Drives the real window through the scripting API (`window.script_app`, as `allblast FOLDER
--script` does) on 160 PBC cells (20 per class, linked from ../shared/data/pbc-dev, not copied),
the way a user works through a sitting:

  start-up    the window shows, and after its first paint the warm-up imports torch, timm and
              the prediction backend on a pool thread (what `allblast` does on every start)
  open        open the folder; the grid shows it
  label       label 20 cells, one key press at a time, 150 ms apart
  train       train Lite0 at 96 px with the continue question every epoch; answer "halt" at the first
  train-2     a second run, continued once (1 more epoch), then halted
  predict     predict the folder with the active model (the second run)
  doubt       sort the grid by doubt (smallest margin first)
  case-report export the folder's case report (PDF)
  model-report the Runs panel's Model Report of the second run (PDF)

A 10 ms QTimer on the GUI thread records the gaps between its ticks during every phase (a gap
minus 10 ms is a stall: the time the event loop could not run); the largest stall and the p99 per
phase are reported (targets: largest < 100 ms, p99 < 30 ms; the start-up freeze < 150 ms). With
--trace-stalls a watchdog thread (stall_tracer.py) prints where every thread was whenever the loop
did not tick for 50 ms. Training throughput (the engine's images/s per epoch) of the app's runs is
compared with `allblast-engine train` on the same cells and settings, run before the sittings.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_gui_training import link_subset, rates  # noqa: E402

TARGETS = {"stall_ms": 100, "p99_ms": 30, "startup_ms": 150, "throughput_ratio": 0.9}
TIMER_MS = 10
PHASES = ("start-up", "open", "label", "train", "train-2", "predict", "doubt", "case-report", "model-report")


def isolate_user_folders(work: Path) -> None:
    """The sitting's label databases, caches, logs and reports go under `work`, not the user's."""
    for var, name in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state"),
                      ("XDG_DOCUMENTS_DIR", "documents")):
        os.environ[var] = str(work / name)


class Probe:
    """The 10 ms timer: every tick's gap, tagged with the phase it fell in."""

    def __init__(self, trace: bool) -> None:
        from PySide6.QtCore import QElapsedTimer, QTimer

        self.phase = "start-up"
        self.gaps: dict[str, list[float]] = {p: [] for p in PHASES}
        self.traces: dict[str, list[str]] = {p: [] for p in PHASES}
        self._clock = QElapsedTimer()
        self._timer = QTimer(interval=TIMER_MS)
        self._timer.timeout.connect(self._tick)
        self.last_tick = [time.perf_counter()]
        self._trace_list: list[str] = []
        self._trace = trace

    def start(self) -> None:
        self._clock.start()
        self.last_tick[0] = time.perf_counter()
        self._timer.start()
        if self._trace:  # from the first tick on: the window's construction is not a stall
            from benchmarks.stall_tracer import start_stall_tracer

            start_stall_tracer(self.last_tick, self._trace_list)

    def stop(self) -> None:
        self._timer.stop()

    def enter(self, phase: str) -> None:
        self._flush()
        self.phase = phase
        # the gap that spans the switch belongs to the new phase: it is the new phase's first work
        print(f"  {phase} ...", flush=True)

    def _flush(self) -> None:
        for trace in self._trace_list:  # as the phase ends: a cut-short run still shows them
            print(f"[{self.phase}] {trace}", flush=True)
        self.traces[self.phase].extend(self._trace_list)
        self._trace_list.clear()

    def _tick(self) -> None:
        self.last_tick[0] = time.perf_counter()
        self.gaps[self.phase].append(self._clock.restart())

    def summary(self) -> dict[str, dict]:
        self._flush()
        out = {}
        for phase, gaps in self.gaps.items():
            stalls = np.maximum(np.array(gaps[1:] if phase == "start-up" else gaps, dtype=float) - TIMER_MS, 0)
            if stalls.size:
                out[phase] = {"ticks": int(stalls.size), "max_ms": round(float(stalls.max()), 1),
                              "p99_ms": round(float(np.percentile(stalls, 99)), 1),
                              "over_100": int((stalls >= 100).sum())}
        return out


def wait(ms: int) -> None:
    """Let the event loop run for `ms` (a user's pause between two actions)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def sitting(work: Path, data: Path, args, index: int) -> tuple[dict, list[Path], dict]:
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from allblast_gui.main_window import MainWindow

    app = QApplication.instance()
    probe = Probe(args.trace_stalls)
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    window = MainWindow(settings=QSettings(str(work / f"settings-{index}.ini"), QSettings.Format.IniFormat),
                        db_dir=work / f"db-{index}", annotator="bench", thumbnail_cache=work / f"thumbs-{index}")
    window.resize(1400, 900)
    window.show()
    api = window.script_app
    probe.start()
    # start-up: as allblast_gui.app.main, the warm-up after the first paint; the phase ends when it is done
    warm = window.training.controller._runner
    QTimer.singleShot(200, window.preload)  # app.WARM_UP_DELAY_MS
    loop = QEventLoop()
    poll = QTimer(interval=20)
    poll.timeout.connect(lambda: (time.perf_counter() - t0 > 0.5 and not warm.busy("warm-up")) and loop.quit())
    poll.start()
    loop.exec()
    poll.stop()
    marks["warm-up done"] = time.perf_counter() - t0

    probe.enter("open")
    api.open(data)
    wait(300)

    probe.enter("label")
    rows = [r for r in window.session.rows() if r.original][::8][:20]  # spread over the classes
    for r in rows:
        api.set_label([r.path], r.original)
        wait(150)

    options = dict(backbone="tf_efficientnet_lite0", img_size=args.img_size, epochs=args.epochs,
                   batch_size=args.batch_size, ask_every=1, device="cpu", split="image", seed=0)
    probe.enter("train")
    run1 = api.train(on_ask=lambda _summary: None, **options)
    wait(300)

    probe.enter("train-2")
    answers = iter([1])
    run2 = api.train(on_ask=lambda _summary: next(answers, None), **{**options, "seed": 1})
    wait(300)

    probe.enter("predict")
    api.predict(run2, device="cpu")
    wait(300)

    probe.enter("doubt")
    combo = window.review.filter_bar.sort_combo
    combo.setCurrentIndex(combo.findData("margin"))
    wait(500)

    probe.enter("case-report")
    api.export_report(work / f"case-{index}.pdf")
    wait(300)

    probe.enter("model-report")
    window.training.runs.select_run(run2)
    api.export_model_report(run2, work / f"model-{index}.pdf")
    wait(300)
    probe.stop()
    marks["end"] = time.perf_counter() - t0
    window.close()
    window.deleteLater()
    app.processEvents()
    return probe.summary(), [run1, run2], {"marks": marks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="sittings, each in a new window")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--trace-stalls", action="store_true",
                    help="print where every thread was whenever the event loop did not tick for 50 ms")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI throughput reference")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_gui_flow.jsonl"))
    ap.add_argument("--sitting", type=int, default=None, help=argparse.SUPPRESS)  # one sitting, in this process
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sitting is not None:
        return one_sitting(args)

    work = Path(tempfile.mkdtemp(prefix="allblast-bench-flow-"))
    isolate_user_folders(work)
    data = link_subset(work / "pbc", args.per_class)
    for image in data.rglob("*.jpg"):  # every run reads the files from the page cache, not the disk
        image.read_bytes()
    print(f"{args.per_class * 8} PBC cells, Lite0 @ {args.img_size} px, batch {args.batch_size}, CPU "
          f"({os.cpu_count()} cores), load {os.getloadavg()[0]:.1f}", flush=True)

    cli_rates: list[float] = []
    if not args.no_cli:
        cmd = [sys.executable, "-m", "engine.cli", "-q", "train", str(data), "--out", str(work / "cli"),
               "--backbone", "tf_efficientnet_lite0", "--img-size", str(args.img_size), "--epochs", "2",
               "--batch-size", str(args.batch_size), "--ask-every", "0", "--device", "cpu", "--split", "image",
               "--seed", "0"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        cli_rates = rates(work / "cli")

    results = []
    for i in range(args.runs):  # each sitting in a new process: the start-up is a real one every time
        print(f"sitting {i + 1} of {args.runs}:", flush=True)
        cmd = [sys.executable, __file__, "--sitting", str(i), "--work", str(work), "--per-class", str(args.per_class),
               "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--out", str(work / "sitting.json")] + (["--trace-stalls"] if args.trace_stalls else [])
        subprocess.run(cmd, check=True, cwd=ROOT)
        row = json.loads((work / "sitting.json").read_text())
        row["cli_images_per_s"] = round(float(np.mean(cli_rates)), 1) if cli_rates else None
        results.append(row)
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    print_table(results)
    return 0


def one_sitting(args) -> int:
    """A child process: the app's start-up as allblast_gui.app.main does it, then one sitting."""
    isolate_user_folders(args.work)
    from PySide6.QtWidgets import QApplication

    from allblast_gui.workers import gui_thread_collector
    from engine.utils.jobs import WORKER_PRELOAD, set_worker_start_method

    set_worker_start_method("forkserver", preload=WORKER_PRELOAD)
    QApplication.instance() or QApplication([])
    collector = gui_thread_collector()  # the cyclic collector on the GUI thread, held off during imports
    try:
        summary, runs, extra = sitting(args.work, args.work / "pbc", args, args.sitting)
    finally:
        collector.timer.stop()
    app_rates = [r for run in runs for r in rates(run)]
    row = {"sitting": args.sitting + 1, "phases": summary, "app_images_per_s": round(float(np.mean(app_rates)), 1),
           "load_avg_1min": round(os.getloadavg()[0], 2), "marks": extra["marks"]}
    args.out.write_text(json.dumps(row))
    return 0


def print_table(results: list[dict]) -> None:
    print("\n| phase | " + " | ".join(f"sitting {r['sitting']}: largest / p99 (ms)" for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for phase in PHASES:
        cells = []
        for r in results:
            p = r["phases"].get(phase)
            cells.append(f"{p['max_ms']:.0f} / {p['p99_ms']:.0f}" if p else "—")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    worst = max((p["max_ms"], phase) for r in results for phase, p in r["phases"].items() if phase != "start-up")
    start = max(r["phases"]["start-up"]["max_ms"] for r in results)
    p99 = max(p["p99_ms"] for r in results for p in r["phases"].values())
    print(f"\nlargest stall outside start-up {worst[0]:.0f} ms ({worst[1]}; target < {TARGETS['stall_ms']}), "
          f"largest p99 {p99:.0f} ms (target < {TARGETS['p99_ms']}), start-up freeze {start:.0f} ms "
          f"(target < {TARGETS['startup_ms']})")
    if results[0]["cli_images_per_s"]:
        ratios = [r["app_images_per_s"] / r["cli_images_per_s"] for r in results]
        print("training throughput app / CLI: " + ", ".join(f"{x:.2f}" for x in ratios)
              + f" (target >= {TARGETS['throughput_ratio']})")


if __name__ == "__main__":
    sys.exit(main())
