"""Time to accuracy (issue 25): the test accuracy the default recipe reaches within a wall-time budget.

For each seed, starts `allblast-engine train DATA --recipe allblast` as a new process, so the clock
runs from process start (Python, torch and timm imports, the scan, building the network and
loading its ImageNet weights all count) to the moment the run writes model.pt (its best epoch so
far, by validation). Each model.pt is copied as it appears; when the budget is spent the run is
stopped, and the last model.pt written within the budget is evaluated on the run's own test split
(pbc-dev: image-level 70/15/15 drawn by the seed, as benchmarks/bench_recipe.py) with the recipe's
test-time augmentation (4 views), after the training process has ended. A run that finishes
inside the budget is evaluated the same way (its final model.pt is the one its model card tests).
Each seed is appended to --out as one JSON line, then a table.

    OMP_NUM_THREADS=2 python benchmarks/bench_time_to_accuracy.py --budget 300 --img-size 160
    python benchmarks/bench_time_to_accuracy.py --device cuda --budget 60      # Lite0 at 224 px
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pbc-dev"


def train_within(data: Path, run: Path, seed: int, args) -> dict:
    """Run one training process for at most `args.budget` seconds; returns the model.pt files it
    wrote, each with its time since the process started."""
    cmd = [sys.executable, "-m", "engine.cli", "-q", "train", str(data), "--out", str(run), "--recipe", "allblast",
           "--split", "image", "--val-fraction", "0.15", "--test-fraction", "0.15", "--seed", str(seed),
           "--backbone", args.backbone, "--epochs", str(args.epochs), "--ask-every", "0", "--device", args.device]
    if args.img_size:
        cmd += ["--img-size", str(args.img_size)]
    snaps, seen = run.parent / f"{run.name}-models", None
    snaps.mkdir()
    log = open(run.parent / f"{run.name}.log", "w")
    start = time.time()
    # A background job's SIGINT is ignored (nohup, `&`), and Python then never turns it into
    # KeyboardInterrupt: give the run the default back, so the interrupt below stops it cleanly.
    default_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if os.name == "posix" else None
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    written: list[tuple[float, Path]] = []
    stopped = False
    while True:
        done = proc.poll() is not None
        model = run / "model.pt"
        try:
            st = model.stat()
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_mtime_ns, st.st_ino) != seen:
            seen = (st.st_mtime_ns, st.st_ino)
            copy = snaps / f"{len(written)}.pt"
            shutil.copyfile(model, copy)  # model.pt is replaced atomically: the copy is one whole file
            written.append((st.st_mtime - start, copy))
        if done:
            break
        if time.time() - start > args.budget and not stopped:
            proc.send_signal(signal.SIGINT)  # the CLI stops at once ("interrupted")
            stopped = True
        if stopped and time.time() - start > args.budget + 30:
            proc.kill()
        time.sleep(0.05)
    log.close()
    return {"written": written, "process_s": time.time() - start, "stopped": stopped, "rc": proc.returncode}


def test_accuracy(model_file: Path, data: Path, run: Path, device: str) -> tuple[float, float, int]:
    """(accuracy, weighted F1, cells) of a model.pt on the run's test split, with TTA."""
    from sklearn.metrics import f1_score

    from engine.data.scan import scan
    from engine.learn.inference import predict
    from engine.learn.model import load_model

    split = json.loads((run / "split.json").read_text())
    labels = {c.path: c.label for c in scan(data, verify=False).cells}
    test = list(split["test"])
    model, spec, _ = load_model(model_file, device)
    pred = predict(model, spec, data, test, device=device, tta=True, batch_size=64).predicted
    truth = [labels[p] for p in test]
    acc = sum(a == b for a, b in zip(pred, truth)) / len(test)
    return acc, float(f1_score(truth, pred, average="weighted")), len(test)


def table(rows: list[dict], budget: float) -> str:
    out = [f"| seed | test accuracy within {budget:g} s | weighted F1 | model.pt written at (s) | model.pt files "
           "within budget | run finished (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        f1 = "-" if r["test_weighted_f1"] is None else f"{r['test_weighted_f1']:.4f}"
        at = "-" if r["model_written_s"] is None else f"{r['model_written_s']:.1f}"
        out.append(f"| {r['seed']} | {acc} | {f1} | {at} | {r['models_within_budget']} | "
                   f"{'stopped at budget' if r['stopped'] else round(r['process_s'], 1)} |")
    accs = [r["test_accuracy"] or 0.0 for r in rows]
    sd = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
    out.append(f"| mean | {statistics.mean(accs):.4f}{sd} | | | | |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--budget", type=float, default=300, metavar="S", help="seconds from process start (default 300)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--img-size", type=int, default=0, help="0 (default): the backbone's own (Lite0: 224)")
    ap.add_argument("--epochs", type=int, default=50, help="the most epochs a run may take (the budget stops it)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_time_to_accuracy.jsonl"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run = Path(tmp) / f"seed{seed}"
            res = train_within(args.data, run, seed, args)
            within = [(t, f) for t, f in res["written"] if t <= args.budget]
            row = {"seed": seed, "budget_s": args.budget, "device": args.device, "backbone": args.backbone,
                   "img_size": args.img_size or None, "test_accuracy": None, "test_weighted_f1": None,
                   "model_written_s": None, "models_within_budget": len(within),
                   "process_s": round(res["process_s"], 1), "stopped": res["stopped"], "rc": res["rc"],
                   "load_avg_1min": round(os.getloadavg()[0], 2)}
            if within:
                t, f = within[-1]
                acc, f1, n = test_accuracy(f, args.data, run, args.device)
                row.update(test_accuracy=acc, test_weighted_f1=f1, model_written_s=round(t, 1), test_cells=n)
            rows.append(row)
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(table(rows, args.budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
