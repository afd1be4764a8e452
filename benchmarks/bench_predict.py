"""Benchmark: prediction through each inference backend, and whole processes, against a naive loop.

Run by hand (not a test), two parts:

    OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --n 200                  # in-process rates
    OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --whole 1200             # whole processes
    OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --whole 1200 --model b3  # B3 @300

In-process: the same images through `engine.learn.inference.predict` with each backend (torch,
OpenVINO, ONNX Runtime), against the naive loop in the same process. Both must agree on (nearly)
every predicted class, so a speed-up is not bought with different work.

Whole processes (`--whole N`): N PBC cells (every class) linked into a temporary folder; the time
from process start to the CSV written, for `allblast-engine predict` with each backend (the first
run of a fast backend exports and compiles the model into its cache; the second reuses it) and for
the naive loop as a script of its own (`--naive-child`).

Naive = what a first notebook does: torchvision ImageFolder (PIL decode), Resize/ToTensor/Normalize,
DataLoader defaults (batch 1, no workers), torch.no_grad, contiguous NCHW, csv.writer.

Models: `lite0` = tf_efficientnet_lite0 @160 with its ImageNet backbone (the bundled weights
package) and a random head; `b3` = efficientnet_b3 @300 with random weights throughout (no offline
ImageNet weights for B3 here; speed does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
DATASETS = {"pbc": SHARED / "pbc-dev", "cnmc": SHARED / "cnmc-samples" / "training_data" / "fold_0"}
MODELS = {"lite0": ("tf_efficientnet_lite0", 160, True), "b3": ("efficientnet_b3", 300, False)}
BACKENDS = ("torch", "openvino", "onnxruntime")


def naive_child(model_path: str, root: str, out: str) -> None:
    """The naive loop as a whole process: what the start-up of a notebook pays for, included."""
    import csv

    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from engine.learn.model import load_model

    model, spec, _ = load_model(model_path, "cpu")
    tf = transforms.Compose([transforms.Resize((spec.img_size, spec.img_size)), transforms.ToTensor(),
                             transforms.Normalize(spec.mean, spec.std)])
    folder = datasets.ImageFolder(root, transform=tf)
    model.eval()
    with torch.no_grad(), open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", *[f"p_{c}" for c in spec.classes]])
        for (path, _), (x, _) in zip(folder.samples, DataLoader(folder)):
            writer.writerow([os.path.relpath(path, root), *model(x).softmax(1)[0].tolist()])


def make_model(kind: str, classes: list[str], out: Path) -> Path:
    import torch

    from engine.learn.model import build_model, save_model

    backbone, size, pretrained = MODELS[kind]
    torch.manual_seed(0)
    model, spec, info = build_model(backbone, classes, pretrained=pretrained, img_size=size)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, model, spec)
    print(f"model {backbone} @{size}, weights: {info.source}")
    return out


def link_cells(src: Path, dst: Path, n: int) -> list[str]:
    """n cells spread over the class folders, linked (not copied) into dst."""
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    per = -(-n // len(classes))
    rel = [f"{c}/{f}" for c in classes for f in sorted(os.listdir(src / c))[:per]][:n]
    for r in rel:
        (dst / r).parent.mkdir(parents=True, exist_ok=True)
        (dst / r).symlink_to(src / r)
    return rel


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def whole_processes(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    data = work / "cells"
    rel = link_cells(DATASETS["pbc"], data, args.whole)
    model = make_model(args.model, sorted(p.name for p in data.iterdir()), work / "run" / "model.pt")
    print(f"{len(rel)} PBC cells, whole processes (process start to CSV written), workers {args.workers}")
    cli = [sys.executable, "-m", "engine.cli", "-q", "predict", str(model), str(data), "--force",
           "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):  # alternate, so a shared machine's load falls on every variant
        for b in args.backends:
            if round_ == 0 and b != "torch":
                first = timed([*cli, "--out", str(work / f"{b}.csv"), "--backend", b])
                print(f"  {b}: first run (exports and compiles into the cache) {first:.1f} s", flush=True)
            results.setdefault(b, []).append(timed([*cli, "--out", str(work / f"{b}.csv"), "--backend", b]))
            print(f"  allblast-engine predict --backend {b:<12} {results[b][-1]:6.1f} s", flush=True)
        results.setdefault("naive", []).append(
            timed([sys.executable, __file__, "--naive-child", str(model), str(data), str(work / "naive.csv")]))
        print(f"  naive loop (PIL + torchvision, batch 1):   {results['naive'][-1]:6.1f} s", flush=True)
    naive = min(results["naive"])
    print(f"best of {args.rounds}:")
    for b in args.backends:
        best = min(results[b])
        print(f"  allblast-engine predict --backend {b:<12} {best:6.1f} s  x{naive / best:.2f} vs naive "
              f"{naive:.1f} s  (runs: {', '.join(f'{t:.1f}' for t in results[b])})")


def in_process(args) -> None:
    import numpy as np
    import torch
    from torchvision import datasets

    from engine.learn.backends.loader import open_predictor
    from engine.learn.inference import predict

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    root = DATASETS["pbc"]
    folder = datasets.ImageFolder(str(root))
    idx = np.linspace(0, len(folder) - 1, min(args.n, len(folder))).round().astype(int).tolist()
    rel = [Path(folder.samples[i][0]).relative_to(root).as_posix() for i in idx]
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    model_path = make_model(args.model, folder.classes, work / "run" / "model.pt")
    predictors = {b: open_predictor(model_path, backend=b, device="cpu") for b in args.backends}
    from engine.learn.model import load_model

    torch_model, spec, _ = load_model(model_path, "cpu")  # its own copy: the naive loop sets its layout
    naive_time, naive_probs = naive_loop(torch_model, spec, root, idx)
    n = len(idx)
    print(f"\n{n} PBC images, {spec.img_size} px")
    print(f"  naive (PIL+torchvision, batch 1, no_grad):  {n / naive_time:7.1f} img/s  ({naive_time:.2f} s)")
    for b, p in predictors.items():
        predict(p.backend, spec, root, rel[:4], batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        preds = predict(p.backend, spec, root, rel, batch_size=args.batch_size, workers=args.workers)
        t = time.perf_counter() - start
        agree = float((preds.probs.argmax(1) == naive_probs.argmax(1)).mean())
        print(f"  {p.backend.describe():<22} batch {args.batch_size}: {n / t:7.1f} img/s  ({t:.2f} s)  "
              f"x{naive_time / t:.2f}  same class {agree:.1%}  max |dp| {np.abs(preds.probs - naive_probs).max():.3f}")


def naive_loop(model, spec, root: Path, idx: list[int]):
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize((spec.img_size, spec.img_size)), transforms.ToTensor(),
                             transforms.Normalize(spec.mean, spec.std)])
    loader = DataLoader(Subset(datasets.ImageFolder(str(root), transform=tf), idx))  # batch 1
    model.eval().to(memory_format=torch.contiguous_format)
    start, out = time.perf_counter(), []
    with torch.no_grad():
        for x, _ in loader:
            out.append(model(x).softmax(1).numpy())
    return time.perf_counter() - start, np.concatenate(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="images for the in-process part (default 200)")
    ap.add_argument("--whole", type=int, metavar="N", help="measure whole processes on N cells instead")
    ap.add_argument("--model", choices=list(MODELS), default="lite0")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="loader workers for ours (default 1)")
    ap.add_argument("--rounds", type=int, default=2, help="whole-process runs of each variant (default 2)")
    ap.add_argument("--naive-child", nargs=3, metavar=("MODEL", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.naive_child:
        naive_child(*args.naive_child)
    elif args.whole:
        whole_processes(args)
    else:
        in_process(args)


if __name__ == "__main__":
    main()
