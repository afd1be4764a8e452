"""Training throughput: our pipeline vs a naive PIL/torchvision loop, same model, images, batch size.

Ours  = engine.learn.loops.train_one_epoch over CellDataset (uint8 items, OpenCV decode, DecodedCache
        so epochs after the first skip decoding) + make_loader + to_model_input on the device,
        channels_last and AMP exactly as `fit` sets them for the device.
Naive = torchvision ImageFolder (PIL decode + Resize + flips + ToTensor + Normalize every epoch,
        float32 batches) + a plain loop: forward, CrossEntropy, backward, Adamax step.

Both train tf_efficientnet_lite0 + the paper's head from the same initial weights. Run by hand:

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --n 200 --epochs 2 --img-size 128

On a GPU, where the first epoch is what users wait for (kernel selection and compilation for each
new batch shape), report epoch 1 and the steady epochs separately, against a bare training step
(synthetic uint8 batches converted on the GPU, same model, precision and layout):

    python benchmarks/bench_train.py --device cuda --n 2000 --epochs 4 --img-size 224 --batch-size 64 --no-naive
    python benchmarks/bench_train.py --device cuda --backbone efficientnet_b3 --img-size 300 --batch-size 40 \
        --n 2000 --epochs 4 --no-naive [--warmup]

Targets (issue 12): epoch 1 <= 2 x a steady epoch + 10 s; steady rate >= 80 % (Lite0) / 90 % (B3)
of the bare step rate. `--warmup` runs engine.learn.warmup on the train and partial-batch shapes
first (its time is printed and counted in epoch 1).

`--engine` times the real training session instead (what `allblast-engine train` runs: fixed
batch shapes, the warm-up, validation and checkpoints) on all of --data, from TrainingStarted to
each EpochEnd; the README's GPU table comes from it:

    python benchmarks/bench_train.py --engine --device cuda --epochs 4 --img-size 224 --batch-size 64
    python benchmarks/bench_train.py --engine --device cuda --epochs 4 --backbone efficientnet_b3 \
        --img-size 300 --batch-size 40

ALLBLAST_CUDNN_BENCHMARK=1 / 0 switches cuDNN autotuning on / off for the engine's run.
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
from engine.learn.device import amp_dtype, autocast, resolve_device  # noqa: E402
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


def bare_step(model, spec, device, args, steps: int = 20) -> tuple[float, float]:
    """(seconds of the first step of this process, images/s of later steps): forward, backward and
    an optimizer step on synthetic uint8 batches converted on the device, no loader."""
    from engine.data.dataset import to_model_input

    channels_last = device.type == "cuda" if args.channels_last == "auto" else args.channels_last == "on"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, True)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    x8 = torch.randint(0, 256, (args.batch_size, 3, spec.img_size, spec.img_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, len(spec.classes), (args.batch_size,), device=device)
    model.train()

    def step():
        with autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(model(to_model_input(x8, spec, device, channels_last)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _sync(device)
    t = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t
    for _ in range(3):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return first, steps * args.batch_size / (time.perf_counter() - t)


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
    args.epoch_seconds = []
    warm = 0.0
    if args.warmup:
        from engine.learn.warmup import batch_shapes, warm_up

        warm = warm_up(model, spec, device, train_batches=batch_shapes(len(cells), args.batch_size, True),
                       autocast_dtype=dtype, channels_last=channels_last)
        print(f" ours: warm-up {warm:.1f} s (counted in epoch 1)")
    for epoch in range(1, args.epochs + 1):
        _sync(device)
        t = time.perf_counter()
        m = drain(train_one_epoch(model, loader, loss_fn, opt, device, spec, epoch=epoch,
                                  autocast_dtype=dtype, scaler=scaler, channels_last=channels_last))
        _sync(device)
        seconds = time.perf_counter() - t + (warm if epoch == 1 else 0.0)
        args.epoch_seconds.append(seconds)
        rates.append(m["images"] / seconds)
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


def bench_engine(device, args) -> None:
    """The real run, as `allblast-engine train` makes it (TrainingSession: fixed batch shapes and
    warm-up on a GPU, validation, checkpoints): epoch 1 = from TrainingStarted to the first
    EpochEnd (the first curve point a user waits for), steady = the later epochs' EpochEnd times."""
    import json
    import tempfile

    from engine.learn.config import TrainConfig
    from engine.learn.events import EpochEnd, Message, TrainingFailed, TrainingStarted
    from engine.learn.fit import fit

    data = scan(args.data, verify=False)
    config = TrainConfig(backbone=args.backbone, pretrained=False, img_size=args.img_size, epochs=args.epochs,
                         batch_size=args.batch_size, ask_every=0, device=str(device), workers=args.workers)
    t0 = time.perf_counter()
    marks, epochs = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for ev in fit(data, Path(tmp) / "run", config):
            now = time.perf_counter() - t0
            if isinstance(ev, TrainingStarted):
                marks["started"] = now
                print(f"engine: set up in {now:.1f} s ({ev.n_train} train, {ev.n_val} val cells)")
            elif isinstance(ev, Message):
                print(f"engine: {now:6.1f} s  {ev.text}")
            elif isinstance(ev, EpochEnd):
                epochs.append(now)
                print(f"engine: {now:6.1f} s  epoch {ev.epoch} ended ({ev.seconds:.1f} s train + val)")
            elif isinstance(ev, TrainingFailed):
                print(f"engine: FAILED: {ev.message}")
                return
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    if len(epochs) < 2:
        print("first epoch vs steady: needs --epochs 2 or more")
        return
    first = epochs[0] - marks["started"]
    steady = [b - a for a, b in zip(epochs, epochs[1:])]
    steady_s = sum(steady) / len(steady)
    train = [m["train"] for m in lines[1:]]
    rate = sum(t["images"] for t in train) / sum(t["seconds"] for t in train)
    wait = sum(t.get("data_seconds", 0.0) for t in train) / sum(t["seconds"] for t in train)
    met = "met" if first <= 2 * steady_s + 10 else "NOT met"
    print(f"engine: epoch 1 (warm-up included) {first:.1f} s, steady epochs {steady_s:.1f} s (train + val): "
          f"target <= 2 x steady + 10 s = {2 * steady_s + 10:.1f} s: {met}")
    args.epoch_seconds = [first, *steady]
    model, spec, _ = build_model(args.backbone, ("a", "b"), pretrained=False, img_size=args.img_size)
    model.to(device)
    first_step, bare_rate = bare_step(model, spec, device, args)
    target = 0.9 if "b3" in args.backbone else 0.8
    print(f"engine: steady training {rate:.1f} img/s ({wait:.0%} of it waiting for the loader), bare step "
          f"{bare_rate:.1f} img/s: {rate / bare_rate:.0%} of the bare step (target {target:.0%}: "
          f"{'met' if rate >= target * bare_rate else 'NOT met'}); bare first step {first_step * 1000:.0f} ms")


def first_epoch_report(model, spec, device, args, rates: list[float]) -> None:
    """Epoch 1 against the steady epochs, and the steady rate against a bare step (run after the
    epochs, so its own first step is a fresh shape only if the epochs never used it)."""
    if args.epochs < 2:
        print("first epoch vs steady: needs --epochs 2 or more")
        return
    first_s, steady = args.epoch_seconds[0], args.epoch_seconds[1:]
    steady_s = sum(steady) / len(steady)
    steady_rate = len(steady) / sum(1 / r for r in rates[1:])
    first_step, bare_rate = bare_step(model, spec, device, args)
    target = 0.9 if "b3" in args.backbone else 0.8
    met = "met" if first_s <= 2 * steady_s + 10 else "NOT met"
    print(f"epoch 1 {first_s:.1f} s, steady epochs {steady_s:.1f} s: epoch 1 = {first_s / steady_s:.2f} x steady "
          f"(target <= 2 x steady + 10 s = {2 * steady_s + 10:.1f} s: {met})")
    print(f"steady {steady_rate:.1f} img/s, bare step {bare_rate:.1f} img/s: {steady_rate / bare_rate:.0%} of the bare "
          f"step (target {target:.0%}: {'met' if steady_rate >= target * bare_rate else 'NOT met'}); a bare step "
          f"of this process after training: first {first_step * 1000:.0f} ms")


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
    ap.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm name (random weights)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (first-epoch runs on a GPU)")
    ap.add_argument("--warmup", action="store_true", help="ours: fixed-shape warm-up before epoch 1")
    ap.add_argument("--engine", action="store_true",
                    help="time the real training session on all of --data (allblast-engine train's path)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.engine:
        torch.manual_seed(0)
        print(f"engine run: {args.backbone} {args.img_size}px, batch {args.batch_size}, {args.epochs} epochs, "
              f"device {device}, ALLBLAST_CUDNN_BENCHMARK={os.environ.get('ALLBLAST_CUDNN_BENCHMARK')}")
        bench_engine(device, args)
        return
    root, classes, cells = pick(args.data, args.n)
    torch.manual_seed(0)
    model, spec, _ = build_model(args.backbone, classes, pretrained=False, img_size=args.img_size)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    print(f"{len(cells)} images, {len(classes)} classes, {args.img_size}px, batch {args.batch_size}, "
          f"{args.epochs} epochs, device {device}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = {}
    for name, fn in (("naive", bench_naive), ("ours", bench_ours))[1 if args.no_naive else 0:]:
        model.load_state_dict(init)
        model.to(device)
        results[name] = fn(root, classes, cells, model, spec, device, args)
        print(f"{name:>5}: " + "  ".join(f"epoch {i + 1} {r:7.1f} img/s" for i, r in enumerate(results[name])))
    first_epoch_report(model, spec, device, args, results["ours"])
    if args.no_naive:
        return
    for i in range(args.epochs):
        print(f"epoch {i + 1}: ours / naive = {results['ours'][i] / results['naive'][i]:.2f}x")
    mean = {k: len(v) / sum(1 / r for r in v) for k, v in results.items()}  # harmonic: total images / time
    print(f"overall: ours {mean['ours']:.1f} img/s, naive {mean['naive']:.1f} img/s, "
          f"ratio {mean['ours'] / mean['naive']:.2f}x")


if __name__ == "__main__":
    main()
