"""Predictions in the window on 15,000 cells: responsiveness while they stream in, throughput
against `allblast-engine predict`, and reopening with stored predictions.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_predict.py [--cells 15000] [--data DIR]

Generates C-NMC-like cells (benchmarks/bench_gui.py's generator) unless DIR holds them, saves a
tf_efficientnet_lite0 model (ImageNet backbone, untrained head, classes all/hem, 64 px: the
numbers are meaningless, the work is real), then:
  - CLI: `allblast-engine -v predict` (its own log line gives the prediction time, without the
    scan and imports a process also spends);
  - app: MainWindow with the folder open, Model > Predict's path (PredictionsUI.predict), timed
    from the call to the finished signal, while a 10 ms QTimer records event-loop stalls
    (target: largest < 50 ms); throughput target: at least 80% of the CLI's;
  - reopen: a fresh window on the folder, its stored predictions loaded with it, from
    open_folder() to the first painted grid (target < 1 s).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_gui import generate  # noqa: E402

TARGETS = {"stall_ms": 50, "throughput_ratio": 0.8, "reopen_ms": 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=15000)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--trace-stalls", action="store_true",
                    help="print every thread's stack when the event loop is blocked over 50 ms (diagnosis)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="allblast-bench-predict-"))
    data = (args.data or work / "cells").resolve()
    generate(data, args.cells)

    from engine.learn.model import build_model, save_model

    model, spec, _ = build_model("tf_efficientnet_lite0", ["all", "hem"], img_size=64)
    model_path = work / "run" / "model.pt"
    save_model(model_path, model, spec)
    print(f"{args.cells:,} cells in {data}; Lite0 @ 64 px, batch {args.batch_size}, CPU ({os.cpu_count()} cores), "
          f"load {os.getloadavg()[0]:.1f}")

    proc = subprocess.run([sys.executable, "-m", "engine.cli", "-q", "-v", "predict", str(model_path), str(data),
                           "--out", str(work / "cli.csv"), "--device", "cpu", "--batch-size", str(args.batch_size)],
                          capture_output=True, text=True, cwd=ROOT)
    proc.check_returncode()
    m = re.search(r"predicted (\d+) cells in ([\d.]+) s", proc.stderr)
    cli_n, cli_s = int(m[1]), float(m[2])

    from PySide6.QtCore import QElapsedTimer, QEvent, QEventLoop, QObject, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from engine.utils.jobs import WORKER_PRELOAD
    from allblast_gui.main_window import MainWindow
    from engine.utils.jobs import set_worker_start_method

    set_worker_start_method("forkserver", preload=WORKER_PRELOAD)
    app = QApplication.instance() or QApplication([])

    def new_window():
        w = MainWindow(settings=QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat),
                       db_dir=work / "db", annotator="bench", thumbnail_cache=work / "thumbs")
        w.resize(1400, 900)
        w.show()
        return w

    window = new_window()
    loop = QEventLoop()
    window.datasetOpened.connect(lambda _ds: loop.quit())
    window.open_folder(data)
    loop.exec()  # the first open builds the index (decodes every file)
    # As the app does after its first paint: torch, timm and the prediction backend, imported ahead.
    window.training.warm_up(backend=window.prefs.inference()[0])
    while window.training.controller._runner.busy("warm-up"):
        app.processEvents()
        time.sleep(0.02)

    gaps: list[float] = []
    clock = QElapsedTimer()
    probe = QTimer(interval=10)
    big: list[tuple[float, float]] = []

    last_tick = [time.perf_counter()]
    traces: list[str] = []
    if args.trace_stalls:
        from benchmarks.stall_tracer import start_stall_tracer

        start_stall_tracer(last_tick, traces)

    def tick() -> None:
        last_tick[0] = time.perf_counter()
        gap = clock.restart()
        gaps.append(gap)
        if gap > 50 + 10 and len(gaps) > 1:
            big.append((time.perf_counter() - t0, gap - 10))

    probe.timeout.connect(tick)
    done = QEventLoop()
    window.predictions.controller.runningChanged.connect(lambda running: None if running else done.quit())
    clock.start()
    probe.start()
    t0 = time.perf_counter()
    window.predictions.predict(model_path, batch_size=args.batch_size, device="cpu")
    if os.environ.get("BENCH_PROFILE"):  # where the GUI thread spends its time while results stream in
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(done.exec)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    else:
        done.exec()
    app_s = time.perf_counter() - t0
    probe.stop()
    n_app = len(window.predictions.controller.last_result)
    window.close()

    # Reopen: the stored predictions come with the rows.
    window = new_window()

    class PaintProbe(QObject):
        at: float | None = None

        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint and self.at is None and window.model.rowCount():
                self.at = time.perf_counter()
                wait.quit()
            return False

    paint = PaintProbe()
    window.grid.viewport().installEventFilter(paint)
    wait = QEventLoop()
    QTimer.singleShot(60_000, wait.quit)
    t_open = time.perf_counter()
    window.open_folder(data)
    wait.exec()
    reopen_ms = (paint.at - t_open) * 1000
    with_preds = sum(r.pred is not None for r in window.model.all_rows())
    window.close()

    stalls = np.array(gaps[1:], dtype=float) - 10.0
    cli_rate, app_rate = cli_n / cli_s, n_app / app_s
    print(f"CLI predict: {cli_n:,} cells in {cli_s:.1f} s ({cli_rate:.0f} img/s, prediction only)")
    print(f"app predict: {n_app:,} cells in {app_s:.1f} s ({app_rate:.0f} img/s, from the call to finished, "
          f"model loading and storing every batch included)")
    print(f"throughput app / CLI: {app_rate / cli_rate:.2f}   (target >= {TARGETS['throughput_ratio']})")
    print(f"event loop while predictions stream in: largest stall {stalls.max():.1f} ms, p99 "
          f"{np.percentile(stalls, 99):.1f} ms   (target < {TARGETS['stall_ms']} ms)")
    print(f"stalls over 50 ms (s after the call: ms): {', '.join(f'{t:.1f}: {g:.0f}' for t, g in big) or 'none'}")
    print(f"reopen with stored predictions ({with_preds:,} cells): first painted grid after {reopen_ms:.0f} ms   "
          f"(target < {TARGETS['reopen_ms']} ms)")
    for trace in traces:
        print(trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
