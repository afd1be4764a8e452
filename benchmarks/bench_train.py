"""Training throughput: our pipeline vs a naive PIL/torchvision loop, same model, images, batch size.

Ours  = engine.learn.loops.train_one_epoch over CellDataset (uint8 items, OpenCV decode, DecodedCache
        so epochs after the first skip decoding) + make_loader + to_model_input on the device,
        channels_last and AMP exactly as `fit` sets them for the device.
Naive = torchvision ImageFolder (PIL decode + Resize + flips + ToTensor + Normalize every epoch,
        float32 batches) + a plain loop: forward, CrossEntropy, backward, Adamax step.

Both train tf_efficientnet_lite0 + the paper's head from the same initial weights. Run by hand:

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --n 200 --epochs 2 --img-size 128
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.dataset import CellDataset, DecodedCache, make_loader  # noqa: E402
from engine.data.scan import scan  # noqa: E402
from engine.learn.device import amp_dtype, resolve_device  # noqa: E402
from engine.learn.loops import train_one_epoch  # noqa: E402
from engine.learn.model import build_model  # noqa: E402
from engine.utils.jobs import drain  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc-dev"


def pick(data_dir: Path, n: int):
    """n labelled images, round-robin over the classes so every class is present."""
    data = scan(data_dir, verify=False)
    by_class: dict[str, list] = {}
    for c in data.cells:
        if c.label:
            by_class.setdefault(c.label, []).append(c)
    chosen, i = [], 0
    while len(chosen) < n and any(i < len(v) for v in by_class.values()):
        chosen += [v[i] for v in by_class.values() if i < len(v)][: n - len(chosen)]
        i += 1
    return data.root, sorted(by_class), chosen


def bench_ours(root, classes, cells, model, spec, device, args) -> list[float]:
    targets = [classes.index(c.label) for c in cells]
    cache = DecodedCache(len(cells), spec.img_size)
    ds = CellDataset(root, [c.path for c in cells], targets, img_size=spec.img_size,
                     interpolation=spec.interpolation, augment=True, cache=cache)
    loader = make_loader(ds, batch_size=args.batch_size, shuffle=True, device=device,
                         workers=args.workers, drop_last=True, seed=0)
    cuda = device.type == "cuda"
    channels_last = cuda if args.channels_last == "auto" else args.channels_last == "on"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, True)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for epoch in range(1, args.epochs + 1):
        _sync(device)
        t = time.perf_counter()
        m = drain(train_one_epoch(model, loader, loss_fn, opt, device, spec, epoch=epoch,
                                  autocast_dtype=dtype, scaler=scaler, channels_last=channels_last))
        _sync(device)
        rates.append(m["images"] / (time.perf_counter() - t))
    return rates


def bench_naive(root, classes, cells, model, spec, device, args) -> list[float]:
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Resize((spec.img_size, spec.img_size)),
        transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip(),
        transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    folder = datasets.ImageFolder(str(root), transform=tf)
    wanted = {str(Path(root) / c.path) for c in cells}
    subset = Subset(folder, [i for i, (p, _) in enumerate(folder.samples) if p in wanted])
    assert len(subset) == len(cells), "ImageFolder must see the same images"
    workers = args.workers if args.workers is not None else (1 if device.type == "cpu" else 8)
    loader = DataLoader(subset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                        drop_last=True)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    model.train()
    for _ in range(args.epochs):
        _sync(device)
        t, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        _sync(device)
        rates.append(seen / (time.perf_counter() - t))
    return rates


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class-folder data set (default: pbc-dev)")
    ap.add_argument("--n", type=int, default=200, help="images (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="loader workers for both (default: automatic)")
    ap.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                    help="ours: auto = as fit does it (CUDA only)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    root, classes, cells = pick(args.data, args.n)
    torch.manual_seed(0)
    model, spec, _ = build_model("tf_efficientnet_lite0", classes, pretrained=False, img_size=args.img_size)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"{len(cells)} images, {len(classes)} classes, {args.img_size}px, batch {args.batch_size}, "
          f"{args.epochs} epochs, device {device}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = {}
    for name, fn in (("naive", bench_naive), ("ours", bench_ours)):
        model.load_state_dict(init)
        model.to(device)
        results[name] = fn(root, classes, cells, model, spec, device, args)
        print(f"{name:>5}: " + "  ".join(f"epoch {i + 1} {r:7.1f} img/s" for i, r in enumerate(results[name])))
    for i in range(args.epochs):
        print(f"epoch {i + 1}: ours / naive = {results['ours'][i] / results['naive'][i]:.2f}x")
    mean = {k: len(v) / sum(1 / r for r in v) for k, v in results.items()}  # harmonic: total images / time
    print(f"overall: ours {mean['ours']:.1f} img/s, naive {mean['naive']:.1f} img/s, "
          f"ratio {mean['ours'] / mean['naive']:.2f}x")


if __name__ == "__main__":
    main()
