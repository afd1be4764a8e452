"""Training from the window: is the GUI still responsive, and is it as fast as the CLI?

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui_training.py [--per-class 40] [--img-size 128]

Trains tf_efficientnet_lite0 on a subset of ../shared/data/pbc-dev (linked, not copied) twice with
the same settings: with `allblast-engine train` in a subprocess (before and after, to see the
machine's drift), and through the app's path (MainWindow -> TrainingUI.start -> the
GeneratorWorker running `fit`), after the app's startup warm-up (torch, timm imported on a pool
thread; its own stall is reported separately). While the app trains, a 10 ms
QTimer on the GUI thread records the gaps between its ticks: the longest time the event loop was
blocked (target: largest stall < 100 ms, p99 < 30 ms). Throughput is the engine's own training
images/s per epoch (metrics.jsonl) of both runs (target: the app at least 90% of the CLI).
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

PBC = ROOT.parent / "shared" / "data" / "pbc-dev"
TARGETS = {"stall_ms": 100, "p99_ms": 30, "throughput_ratio": 0.9}


def link_subset(dst: Path, per_class: int) -> Path:
    for cls in sorted(p.name for p in PBC.iterdir() if p.is_dir()):
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for image in sorted((PBC / cls).glob("*.jpg"))[:per_class]:
            link = dst / cls / image.name
            if not link.exists():
                link.symlink_to(image)
    return dst


def rates(run: Path) -> list[float]:
    return [json.loads(line)["train"]["images_per_s"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--trace-stalls", action="store_true",
                    help="print every thread's stack when the event loop is blocked over 50 ms (diagnosis)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI runs (with --trace-stalls)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="allblast-bench-train-"))
    data = link_subset(work / "pbc", args.per_class)
    settings = ["--backbone", "tf_efficientnet_lite0", "--img-size", str(args.img_size), "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), "--ask-every", "0", "--device", "cpu", "--split", "image",
                "--seed", "0"]
    print(f"{args.per_class * 8} PBC cells, Lite0 @ {args.img_size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs, CPU ({os.cpu_count()} cores), load {os.getloadavg()[0]:.1f}")

    for image in data.rglob("*.jpg"):  # every run reads the files from the page cache, not the disk
        image.read_bytes()

    def cli(name: str) -> tuple[Path, float]:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "engine.cli", "-q", "train", str(data), "--out", str(work / name),
                        *settings], check=True, capture_output=True, cwd=ROOT)
        return work / name, time.perf_counter() - start

    # CLI before and after the app: the machine's drift shows in the two CLI runs.
    cli_runs = [] if args.no_cli else [cli("cli-before")]

    from PySide6.QtCore import QElapsedTimer, QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from engine.utils.jobs import WORKER_PRELOAD
    from allblast_gui.main_window import MainWindow
    from allblast_gui.scripting import train_config
    from engine.utils.jobs import set_worker_start_method

    set_worker_start_method("forkserver", preload=WORKER_PRELOAD)  # as allblast_gui.app.main does
    app = QApplication.instance() or QApplication([])
    window = MainWindow(settings=QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat),
                        db_dir=work / "db", annotator="bench", thumbnail_cache=work / "thumbs")
    window.resize(1400, 900)
    window.show()
    loop = QEventLoop()
    window.datasetOpened.connect(lambda _ds: loop.quit())
    window.open_folder(data)
    loop.exec()

    # The app imports torch and timm on a pool thread shortly after it starts: measure that too.
    warm_gaps: list[float] = []
    warm_clock = QElapsedTimer()
    warm_probe = QTimer(interval=10)
    warm_probe.timeout.connect(lambda: warm_gaps.append(warm_clock.restart()))
    warmed = QEventLoop()
    warm_clock.start()
    warm_probe.start()
    window.training.warm_up()
    QTimer.singleShot(100, lambda: window.training.controller._runner.busy("warm-up") or warmed.quit())
    poll = QTimer(interval=50)
    poll.timeout.connect(lambda: window.training.controller._runner.busy("warm-up") or warmed.quit())
    poll.start()
    t_warm = time.perf_counter()
    warmed.exec()
    poll.stop()
    warm_probe.stop()
    warm_s = time.perf_counter() - t_warm
    warm_stall = max(warm_gaps[1:], default=10.0) - 10.0

    config = train_config({"backbone": "tf_efficientnet_lite0", "img_size": args.img_size, "epochs": args.epochs,
                           "batch_size": args.batch_size, "ask_every": 0, "device": "cpu", "split": "image",
                           "seed": 0})
    gaps: list[float] = []
    clock = QElapsedTimer()
    probe = QTimer(interval=10)

    big: list[tuple[float, float]] = []  # (seconds since start, gap ms) of gaps over 50 ms

    last_tick = [time.perf_counter()]
    traces: list[str] = []
    if args.trace_stalls:
        from benchmarks.stall_tracer import start_stall_tracer

        start_stall_tracer(last_tick, traces)

    def tick() -> None:
        last_tick[0] = time.perf_counter()
        gap = clock.restart()
        gaps.append(gap)
        if gap > 60:
            big.append((time.perf_counter() - t0, gap - 10))

    probe.timeout.connect(tick)
    marks: dict[str, float] = {}
    c = window.training.controller
    c.started.connect(lambda _e: marks.setdefault("started", time.perf_counter() - t0))
    c.progress.connect(lambda e: marks.setdefault("first batch", time.perf_counter() - t0))
    c.epochEnded.connect(lambda e: marks.setdefault(f"epoch {e.epoch} end", time.perf_counter() - t0))
    done = QEventLoop()
    window.training.controller.runningChanged.connect(lambda running: None if running else done.quit())
    t0 = time.perf_counter()
    clock.start()
    probe.start()
    run = window.training.start(config)
    done.exec()
    probe.stop()
    app_wall = time.perf_counter() - t0
    window.close()
    if not args.no_cli:
        cli_runs.append(cli("cli-after"))

    gaps_arr = np.array(gaps[1:], dtype=float)
    stalls = gaps_arr - 10.0  # beyond the timer's own interval
    app_rates = rates(run)
    cli_rates = [rate for path, _ in cli_runs for rate in rates(path)]
    ratio = float(np.mean(app_rates) / np.mean(cli_rates)) if cli_rates else float("nan")
    for (path, wall), when in zip(cli_runs, ("before", "after")):
        print(f"CLI ({when}): {wall:.1f} s as a process; training img/s per epoch "
              + ", ".join(f"{r:.1f}" for r in rates(path)))
    print(f"app: {app_wall:.1f} s from start to finished; training img/s per epoch "
          + ", ".join(f"{r:.1f}" for r in app_rates))
    print(f"startup warm-up (torch + timm imported on a pool thread): {warm_s:.1f} s, largest stall "
          f"{warm_stall:.0f} ms")
    print(f"throughput app / CLI (mean training img/s over all epochs): {ratio:.2f}   "
          f"(target >= {TARGETS['throughput_ratio']})")
    print(f"event loop during training: {len(gaps_arr)} ticks of 10 ms, largest stall {stalls.max():.1f} ms, "
          f"p99 {np.percentile(stalls, 99):.1f} ms, p50 {np.percentile(stalls, 50):.1f} ms   "
          f"(targets < {TARGETS['stall_ms']} ms, p99 < {TARGETS['p99_ms']} ms)")
    print("phases (s from start): " + ", ".join(f"{k} {v:.1f}" for k, v in marks.items()))
    print("stalls over 50 ms (s from start: ms): " + ", ".join(f"{t:.1f}: {g:.0f}" for t, g in big))
    for trace in traces:
        print(trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
