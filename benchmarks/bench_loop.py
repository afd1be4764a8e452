"""The expert loop, measured: how many labels each suggestion strategy needs (issue 24).

Simulates the expert with the true labels of pbc-dev (2,000 PBC cells, 8 classes, 250 each):

1. The folder is predicted once with Lite0 and its ImageNet weights, through the engine's
   prediction pass (`open_predictor` + `predict`: OpenVINO when installed, as the app does), which
   keeps every cell's embedding (engine.learn.embeddings).
2. Per seed, a fixed test part (`--test-per-class`, stratified, drawn by the seed) that no round
   trains on, validates on or suggests from; the rest is the pool. The loop starts from
   `--start-per-class` labelled cells per class drawn from the pool by the seed (the same for
   every strategy of a seed).
3. Each round is the app's Keep Learning round from the active model ("continue": its backbone
   stays): the round's split of the labelled cells (engine.learn.headfit.round_split: the patient
   protocol, 15 % validation, never trained on), a fresh head trained on the training part's
   stored embeddings (engine.learn.headfit), the pool and the test part predicted from theirs; then
   `--batch` cells are suggested among the pool's unlabelled cells (engine.learn.suggest) and the
   simulated expert labels them. Every strategy runs the same rounds and seeds.
4. Printed: test accuracy against the number of labels per strategy (mean ± sd over the seeds),
   and for each strategy the labels it needs to reach random's final mean accuracy (linear
   interpolation between rounds), the label efficiency (random's labels / those), and the worst
   gap to random at any round.

`--compare-starts` then measures the other start Keep Learning offers, "retrain from ImageNet on
all labels": a full training run (`fit`, allblast recipe) on the final labelled cells of the first
seed's best strategy, plus predicting the folder again, against the head round on the same cells:
test accuracy and time, so the dialog's default is the one better for the time.

    OMP_NUM_THREADS=2 python benchmarks/bench_loop.py --seeds 0 1 2

Each finished loop is appended to --out as JSON lines (a cut-short benchmark keeps what finished).
Wall time depends on the machine's load; CPU time is this process's (all its threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.scan import scan  # noqa: E402
from engine.learn.headfit import HeadSettings, fit_head, head_logits, load_head, round_split  # noqa: E402
from engine.learn.suggest import STRATEGIES, suggest  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-dev"
LITE0 = "tf_efficientnet_lite0"


def embed_folder(data, cells, args) -> tuple[np.ndarray, dict]:
    """Every cell's embedding from one prediction pass of Lite0 with its ImageNet weights (the head is
    untrained and unused). Cached in --cache (keyed by image size, TTA, backend) for reruns."""
    import torch

    from engine.learn.backends.loader import open_predictor
    from engine.learn.inference import predict
    from engine.learn.model import build_model, save_model

    key = f"{args.img_size}-tta{int(args.tta)}-{args.backend}-{len(cells)}"
    if args.cache and Path(args.cache).is_file():
        f = np.load(args.cache, allow_pickle=False)
        if str(f["key"]) == key and list(f["paths"]) == [c.path for c in cells]:
            return f["emb"], json.loads(str(f["timing"]))
    t, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model, spec, info = build_model(LITE0, sorted({c.label for c in cells}), img_size=args.img_size)
        save_model(Path(tmp) / "model.pt", model, spec)
        p = open_predictor(Path(tmp) / "model.pt", backend=args.backend, device="cpu")
        pred = predict(p.backend, p.spec, data.root, cells, batch_size=64, tta=args.tta)
    timing = {"wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - cpu, 1),
              "backend": p.backend.describe(), "weights": info.source, "dim": int(pred.embeddings.shape[1])}
    if pred.paths != [c.path for c in cells]:
        raise RuntimeError(f"{len(pred.problems)} cells could not be read: {pred.problems[:3]}")
    if args.cache:
        np.savez(args.cache, emb=pred.embeddings, paths=np.array(pred.paths), key=key, timing=json.dumps(timing))
    return pred.embeddings, timing


def draw(y: np.ndarray, per_class: int, rng: np.random.Generator, among: np.ndarray) -> np.ndarray:
    """`per_class` rows of each class among `among`, drawn by `rng`."""
    out = []
    for k in np.unique(y):
        rows = among[y[among] == k]
        out.append(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
    return np.sort(np.concatenate(out))


def one_loop(cells, y, emb, classes, seed: int, strategy: str, args) -> tuple[list[dict], np.ndarray]:
    """One simulated loop: its rows (one per round) and the labelled mask at its end."""
    rng = np.random.default_rng(seed)
    everything = np.arange(len(y))
    test = draw(y, args.test_per_class, rng, everything)  # never trained, validated or suggested from
    pool = np.setdiff1d(everything, test)
    labelled = np.zeros(len(y), bool)
    labelled[draw(y, args.start_per_class, rng, pool)] = True  # the same start for every strategy
    settings = HeadSettings(updates=args.updates, seed=seed)
    rows = []
    t_loop, cpu_loop = time.perf_counter(), time.process_time()
    for r in range(args.rounds + 1):
        t = time.perf_counter()
        idx = np.flatnonzero(labelled)
        row_of = {cells[i].path: i for i in idx}
        labelled_cells = [cells[i] for i in idx]
        split = round_split(labelled_cells, seed=seed)
        tr = np.array([row_of[p] for p in split.train])
        va = np.array([row_of[p] for p in split.val], dtype=np.int64)
        fit = fit_head(emb[tr], y[tr], len(classes), val=(emb[va], y[va]) if len(va) else None, settings=settings)
        head = load_head(fit.state, emb.shape[1], len(classes))
        logits = head_logits(head, emb)  # every cell at once: the pool and the test part
        test_acc = float((logits[test].argmax(1) == y[test]).mean())
        row = {"seed": seed, "strategy": strategy, "round": r, "labels": int(labelled.sum()), "train": len(tr),
               "val": len(va), "test_accuracy": test_acc, "val_accuracy": fit.val.get("accuracy"),
               "round_s": None}
        if r < args.rounds:
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            # only the pool's rows go in: the test part's cells are not even seen unlabelled
            s = suggest(probs[pool], n=args.batch, strategy=strategy, candidates=~labelled[pool],
                        embeddings=emb[pool], labelled=labelled[pool], seed=seed * 1000 + r)
            picked = pool[s.indices]
            labelled[picked] = True  # the simulated expert labels them (true labels)
            row["misclassified_in_batch"] = int((probs[picked].argmax(1) != y[picked]).sum())
        row["round_s"] = round(time.perf_counter() - t, 2)
        rows.append(row)
    for row in rows:
        row["loop_wall_s"] = round(time.perf_counter() - t_loop, 1)
        row["loop_cpu_s"] = round(time.process_time() - cpu_loop, 1)
    return rows, labelled


def curves(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """strategy -> (labels, mean test accuracy, sd) per round."""
    out = {}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == strategy]
        rounds = sorted({r["round"] for r in rs})
        labels = np.array([statistics.mean(r["labels"] for r in rs if r["round"] == k) for k in rounds])
        accs = [[r["test_accuracy"] for r in rs if r["round"] == k] for k in rounds]
        out[strategy] = (labels, np.array([statistics.mean(a) for a in accs]),
                         np.array([statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]))
    return out


def labels_to_reach(labels: np.ndarray, acc: np.ndarray, target: float) -> float | None:
    """The labels at which the mean curve first reaches `target` (linear between rounds)."""
    for i, a in enumerate(acc):
        if a >= target:
            if i == 0:
                return float(labels[0])
            a0, a1, l0, l1 = acc[i - 1], a, labels[i - 1], labels[i]
            return float(l0 + (target - a0) / (a1 - a0) * (l1 - l0)) if a1 > a0 else float(l1)
    return None


def report(rows: list[dict], n_seeds: int) -> str:
    c = curves(rows)
    names = list(c)
    out = [f"| labels | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    labels = c[names[0]][0]
    for i, n in enumerate(labels):
        out.append(f"| {n:.0f} | " + " | ".join(f"{c[s][1][i]:.3f} ± {c[s][2][i]:.3f}" for s in names) + " |")
    out.append("")
    if "random" in c:
        rl, ra, _ = c["random"]
        target, final_labels = ra[-1], rl[-1]
        out.append(f"random's final mean test accuracy: {target:.3f} at {final_labels:.0f} labels "
                   f"({n_seeds} seeds)")
        out.append("")
        out.append("| strategy | labels to reach random's final accuracy | share of random's labels | label "
                   "efficiency | worst gap to random at a round (points) | final accuracy |")
        out.append("|---|---|---|---|---|---|")
        for s in names:
            ls, acc, _ = c[s]
            need = labels_to_reach(ls, acc, target)
            gap = float(np.min(acc - ra)) * 100
            share = f"{need / final_labels:.0%}" if need else "not reached"
            eff = f"{final_labels / need:.2f}x" if need else "-"
            out.append(f"| {s} | {need:.0f} | {share} | {eff} | {gap:+.1f} | {acc[-1]:.3f} |" if need else
                       f"| {s} | not reached | - | - | {gap:+.1f} | {acc[-1]:.3f} |")
    return "\n".join(out)


def figure(rows: list[dict], path: Path, title: str) -> None:
    """Test accuracy against labels, one curve per strategy (mean over seeds, ± sd as a band), as
    a PNG drawn with Qt (QPainter, offscreen)."""
    import os as _os

    _os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter, QPainterPath, QPen, QPolygonF

    app = QGuiApplication.instance() or QGuiApplication([])  # fonts need one
    c = curves(rows)
    colors = {"random": "#777777", "margin": "#1f77b4", "entropy": "#009e73", "diverse": "#d55e00"}
    w, h, left, right, top, bottom = 1200, 640, 90, 30, 70, 70
    image = QImage(w, h, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    font = p.font()
    font.setPixelSize(20)
    p.setFont(font)
    plot = QRectF(left, top, w - left - right, h - top - bottom)
    xs = np.concatenate([v[0] for v in c.values()])
    lo = min(float((v[1] - v[2]).min()) for v in c.values())
    hi = max(float((v[1] + v[2]).max()) for v in c.values())
    lo, hi = np.floor(lo * 20) / 20, np.ceil(hi * 20) / 20
    x0, x1 = float(xs.min()), float(xs.max())

    def pt(x, y):
        return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                       plot.bottom() - (y - lo) / (hi - lo) * plot.height())

    p.setPen(QColor("#333333"))
    p.drawText(QRectF(0, 8, w, 26), Qt.AlignmentFlag.AlignHCenter, title)
    for k in range(int(round((hi - lo) / 0.05)) + 1):
        y = lo + 0.05 * k
        a = pt(x0, y)
        p.setPen(QPen(QColor("#dddddd"), 1))
        p.drawLine(QPointF(plot.left(), a.y()), QPointF(plot.right(), a.y()))
        p.setPen(QColor("#333333"))
        p.drawText(QRectF(0, a.y() - 12, left - 10, 24), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   f"{y:.2f}")
    for x in c[next(iter(c))][0][::2]:
        a = pt(x, lo)
        p.drawText(QRectF(a.x() - 30, plot.bottom() + 6, 60, 24), Qt.AlignmentFlag.AlignHCenter, f"{x:.0f}")
    p.drawText(QRectF(plot.left(), h - 30, plot.width(), 24), Qt.AlignmentFlag.AlignHCenter,
               "expert labels (test accuracy, mean ± sd over seeds)")
    legend_x = plot.left() + 10
    for name, (ls, acc, sd) in c.items():
        color = QColor(colors.get(name, "#000000"))
        band = QPolygonF([pt(x, y) for x, y in zip(ls, acc + sd)] + [pt(x, y) for x, y in zip(ls[::-1], (acc - sd)[::-1])])
        fill = QColor(color)
        fill.setAlpha(35)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(fill)
        p.drawPolygon(band)
        p.setBrush(Qt.BrushStyle.NoBrush)
        curve = QPainterPath(pt(ls[0], acc[0]))
        for x, y in zip(ls[1:], acc[1:]):
            curve.lineTo(pt(x, y))
        p.setPen(QPen(color, 3))
        p.drawPath(curve)
        p.drawLine(QPointF(legend_x, top + 20), QPointF(legend_x + 30, top + 20))
        p.setPen(QColor("#333333"))
        p.drawText(QPointF(legend_x + 38, top + 27), name)
        legend_x += 60 + p.fontMetrics().horizontalAdvance(name)
    p.setPen(QPen(QColor("#333333"), 1))
    p.drawRect(plot)
    p.end()
    if not image.save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    del app


def compare_starts(data, cells, y, emb, classes, rows, args) -> dict:
    """Head round ("continue") vs a full run from ImageNet ("retrain") on the same labelled cells."""
    from engine.data.cells import ScanResult
    from engine.learn.backends.loader import open_predictor
    from engine.learn.events import TrainingFailed
    from engine.learn.fit import fit
    from engine.learn.inference import predict
    from engine.learn.recipes import recipe_config

    c = curves(rows)
    best = max((s for s in c if s != "random"), key=lambda s: c[s][1].mean(), default="random")
    seed = args.seeds[0]
    _, final = one_loop(cells, y, emb, classes, seed, best, args)  # replayed: deterministic
    test = draw(y, args.test_per_class, np.random.default_rng(seed), np.arange(len(y)))
    labelled_cells = [cells[i] for i in np.flatnonzero(final)]
    out = {"strategy": best, "seed": seed, "labels": len(labelled_cells)}
    t = time.perf_counter()
    split = round_split(labelled_cells, seed=seed)
    row_of = {cells[i].path: i for i in np.flatnonzero(final)}
    tr = np.array([row_of[p] for p in split.train])
    va = np.array([row_of[p] for p in split.val])
    head_fit = fit_head(emb[tr], y[tr], len(classes), val=(emb[va], y[va]), settings=HeadSettings(args.updates, seed=seed))
    logits = head_logits(load_head(head_fit.state, emb.shape[1], len(classes)), emb)
    out["continue"] = {"test_accuracy": float((logits[test].argmax(1) == y[test]).mean()),
                       "round_s": round(time.perf_counter() - t, 1), "what": "head on stored embeddings"}
    with tempfile.TemporaryDirectory() as tmp:
        t, cpu = time.perf_counter(), time.process_time()
        cfg = recipe_config("allblast", backbone=LITE0, img_size=args.full_img_size, epochs=args.full_epochs,
                            ask_every=0, device="cpu", seed=seed, split="patient", val_fraction=0.15,
                            test_fraction=0.0)
        events = list(_events(fit(ScanResult(data.root, labelled_cells), Path(tmp) / "run", cfg)))
        failed = [e for e in events if isinstance(e, TrainingFailed)]
        if failed:
            raise RuntimeError(failed[0].message)
        trained = time.perf_counter() - t
        p = open_predictor(Path(tmp) / "run" / "model.pt", backend=args.backend, device="cpu")
        pred = predict(p.backend, p.spec, data.root, cells, batch_size=64)  # the folder predicted again
        acc = float((pred.probs[test].argmax(1) == y[test]).mean())
        out["retrain"] = {"test_accuracy": acc, "train_s": round(trained, 1),
                          "repredict_s": round(time.perf_counter() - t - trained, 1),
                          "round_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - cpu, 1),
                          "what": f"fit, allblast recipe, {args.full_epochs} epochs at {args.full_img_size} px, then "
                                  "predict the folder"}
    return out


def _events(gen):
    try:
        while True:
            yield next(gen)
    except StopIteration:
        return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--strategies", nargs="+", default=["random", "margin", "entropy", "diverse"],
                    choices=STRATEGIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--img-size", type=int, default=224, help="the prediction pass's image size (Lite0's own)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                    help="embeddings as the mean of 4 dihedral views (a TTA prediction pass)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--start-per-class", type=int, default=3)
    ap.add_argument("--batch", type=int, default=24, help="cells suggested per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--updates", type=int, default=HeadSettings.updates, help="head updates per round")
    ap.add_argument("--compare-starts", action="store_true")
    ap.add_argument("--full-img-size", type=int, default=128)
    ap.add_argument("--full-epochs", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=None, help="an .npz keeping the embeddings between runs")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_loop.jsonl"))
    ap.add_argument("--figure", type=Path, default=None, metavar="PNG", help="also draw the curves into PNG")
    ap.add_argument("--rows-from", type=Path, default=None, metavar="JSONL",
                    help="take the loops' rows from an earlier run's --out instead of running them (e.g. to run "
                         "--compare-starts alone)")
    args = ap.parse_args()
    t0, cpu0 = time.perf_counter(), time.process_time()
    data = scan(args.data, verify=False)
    cells = [c for c in data.cells if c.label]
    classes = sorted({c.label for c in cells})
    y = np.array([classes.index(c.label) for c in cells])
    emb, timing = embed_folder(data, cells, args)
    print(json.dumps({"embeddings": timing, "cells": len(cells), "bytes_per_cell": int(emb.shape[1] * emb.itemsize)}),
          flush=True)
    rows: list[dict] = []
    if args.rows_from:
        rows = [r for r in map(json.loads, args.rows_from.read_text().splitlines())
                if r["seed"] in args.seeds and r["strategy"] in args.strategies]
    for seed in args.seeds if not rows else ():
        for strategy in args.strategies:
            loop, _ = one_loop(cells, y, emb, classes, seed, strategy, args)
            rows.extend(loop)
            with open(args.out, "a", encoding="utf-8") as fh:
                for r in loop:
                    fh.write(json.dumps(r) + "\n")
            last = loop[-1]
            print(json.dumps({k: last[k] for k in ("seed", "strategy", "labels", "test_accuracy", "loop_wall_s",
                                                   "loop_cpu_s")}), flush=True)
    print(report(rows, len(args.seeds)))
    if args.figure:
        figure(rows, args.figure, f"bench_loop.py: Lite0 (ImageNet) head rounds on pbc-dev, seeds "
               f"{', '.join(map(str, args.seeds))}, rounds of {args.batch}")
    if args.compare_starts:
        print(json.dumps(compare_starts(data, cells, y, emb, classes, rows, args)), flush=True)
    print(json.dumps({"total_wall_s": round(time.perf_counter() - t0, 1),
                      "total_cpu_s": round(time.process_time() - cpu0, 1),
                      "load_avg_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
