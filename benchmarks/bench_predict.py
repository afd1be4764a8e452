"""Benchmark: our prediction pipeline vs a naive PIL/torchvision loop, same model, same images.

Run by hand (not a test):  OMP_NUM_THREADS=2 python benchmarks/bench_predict.py --n 200
The model is tf_efficientnet_lite0 with our head (ImageNet backbone from the pip package, random
head: speed does not depend on the head's weights). Both pipelines see the same files and must
agree on (nearly) every predicted class, so the speed-up is not bought with different work.

Naive baseline = what a first script usually does: torchvision ImageFolder (PIL decode),
Resize/ToTensor/Normalize, DataLoader defaults (batch 1, no workers), torch.no_grad (not
inference_mode), contiguous NCHW. Ours = engine.learn.inference.predict: cv2 decode + INTER_AREA resize,
uint8 batches normalised in one step, channels_last, inference_mode, batches of --batch-size.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.learn.inference import predict  # noqa: E402
from engine.learn.model import build_model  # noqa: E402
from engine.learn.weights import LITE0  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {"pbc": SHARED / "pbc-dev", "cnmc": SHARED / "cnmc-samples" / "training_data" / "fold_0"}


def pick(folder_ds, n: int) -> list[int]:
    """n indices spread evenly over the (class-sorted) ImageFolder, so every class is present."""
    n = min(n, len(folder_ds))
    return np.linspace(0, len(folder_ds) - 1, n).round().astype(int).tolist()


def naive(model, spec, root: Path, idx: list[int]) -> tuple[float, np.ndarray]:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Resize((spec.img_size, spec.img_size)),
        transforms.ToTensor(),
        transforms.Normalize(spec.mean, spec.std),
    ])
    loader = DataLoader(Subset(datasets.ImageFolder(str(root), transform=tf), idx))  # batch 1
    model.eval()
    start, out = time.perf_counter(), []
    with torch.no_grad():
        for x, _ in loader:
            out.append(model(x).softmax(1).numpy())
    return time.perf_counter() - start, np.concatenate(out)


def ours(model, spec, root: Path, rel: list[str], batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    preds = predict(model, spec, root, rel, device="cpu", batch_size=batch_size, workers=workers)
    assert not preds.problems, preds.problems
    return time.perf_counter() - start, preds.probs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images per data set (default 200)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="worker counts to try for ours")
    ap.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = ap.parse_args(argv)
    from torchvision import datasets

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {LITE0}")
    for name in args.data:
        root = DATASETS[name]
        if not root.is_dir():
            print(f"{name}: {root} not found, skipped")
            continue
        folder = datasets.ImageFolder(str(root))
        idx = pick(folder, args.n)
        rel = [Path(folder.samples[i][0]).relative_to(root).as_posix() for i in idx]
        torch.manual_seed(0)
        model, spec, info = build_model(LITE0, folder.classes)
        model.eval()
        # Warm up both paths (first-call allocations, lazy imports) on a few images.
        naive(model, spec, root, idx[:4])
        ours(model, spec, root, rel[:4], args.batch_size, 0)

        t_naive, p_naive = naive(model, spec, root, idx)
        n = len(idx)
        print(f"\n{name}: {n} images, {spec.img_size}px, weights={info.source}")
        print(f"  naive (PIL+torchvision, batch 1, no_grad): {n / t_naive:7.1f} img/s  ({t_naive:.2f} s)")
        for w in args.workers:
            t_ours, p_ours = ours(model, spec, root, rel, args.batch_size, w)
            agree = float((p_ours.argmax(1) == p_naive.argmax(1)).mean())
            print(f"  ours  (batch {args.batch_size}, workers {w}):            {n / t_ours:7.1f} img/s  "
                  f"({t_ours:.2f} s)  speed-up x{t_naive / t_ours:.2f}  same class {agree:.1%}  "
                  f"max |dp| {np.abs(p_ours - p_naive).max():.3f}")


if __name__ == "__main__":
    main()
