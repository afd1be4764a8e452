"""Recipes: the paper's reproduces the numbers of the code before recipes existed; each part of the
allblast recipe does what it says (EMA, LR schedule, augmentation), and the model card says it all."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.augment import KEEP, Augment, cell_crop, crop_box, soft_blur, stain_jitter
from engine.data.cells import ScanResult
from engine.data.dataset import CellDataset, DihedralSampler
from engine.data.scan import scan
from engine.learn.config import TrainConfig
from engine.learn.recipes import RECIPE_FIELDS, RECIPES, build_ema, build_optimizer, build_scheduler, recipe_config
from engine.learn.run_folder import RunDir

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import paper_run  # noqa: E402


def test_paper_recipe_reproduces_the_numbers_from_before_recipes(pbc_dir, tmp_path):
    """tests/data/paper_reference.json was made by tests/paper_run.py on commit 0cf73f7 (before
    recipes): same cells, seed, split and settings. The paper recipe must give the same run: every
    epoch's losses and accuracies, the LR, the test metrics and the final weights. (Losses are
    compared to 1e-6 relative, so a different CPU's last bits do not fail it; any change to the
    recipe moves them by far more. On the machine that made the file they are equal to the bit.)"""
    ref = json.loads((TESTS / "data" / "paper_reference.json").read_text())
    recipe = {**RECIPES["paper"], "batch_size": paper_run.SETTINGS["batch_size"]}  # the reference's tiny batch
    new = paper_run.run(pbc_dir, tmp_path / "run", **recipe, recipe="paper")
    assert [e["epoch"] for e in new["epochs"]] == [e["epoch"] for e in ref["epochs"]]
    for got, want in zip(new["epochs"], ref["epochs"]):
        assert got["lr"] == want["lr"]
        for part in ("train", "val"):
            assert got[part]["accuracy"] == want[part]["accuracy"]
            assert got[part]["loss"] == pytest.approx(want[part]["loss"], rel=1e-6)
    assert new["test"]["accuracy"] == ref["test"]["accuracy"]
    assert new["test"]["loss"] == pytest.approx(ref["test"]["loss"], rel=1e-6)
    # The final weights: bit for bit on the CPU capability that made the file (torch picks its
    # kernels by capability, so another one may round differently), and on any CPU every tensor's
    # sum and sum of squares to 1e-5 relative (a recipe change moves them by far more).
    if torch.backends.cpu.get_cpu_capability() == ref["cpu_capability"]:
        assert new["weights_sha256"] == ref["weights_sha256"]
    assert new["weights_fingerprint"].keys() == ref["weights_fingerprint"].keys()
    for name, (total, squares) in ref["weights_fingerprint"].items():
        got_total, got_squares = new["weights_fingerprint"][name]
        assert got_squares == pytest.approx(squares, rel=1e-5), name
        assert got_total == pytest.approx(total, rel=1e-5, abs=1e-5 * squares ** 0.5), name
    card = RunDir(tmp_path / "run").read_model_card()
    assert card["recipe"]["name"] == "paper" and card["world_size"] == 1
    assert set(RECIPE_FIELDS) <= set(card["recipe"])  # every hyper-parameter of the recipe


def test_old_configs_resume_as_the_paper_recipe():
    """A config.json from before recipes has none of their keys: it must read back as the paper."""
    old = {k: v for k, v in TrainConfig(lr=1e-3).to_dict().items() if k not in RECIPE_FIELDS and k != "recipe"}
    cfg = TrainConfig.from_dict(old)
    assert cfg.recipe == "paper" and all(getattr(cfg, k) == v for k, v in RECIPES["paper"].items())
    assert recipe_config("allblast", lr=3e-4).lr == 3e-4  # explicit settings win over the recipe's
    with pytest.raises(ValueError):
        recipe_config("nope")


def test_the_recipe_sets_the_batch_size_unless_the_command_line_does(tmp_path):
    """allblast trains on half the paper's batch with an EMA (README, Recipes); --batch-size and
    --lr still win, and --recipe paper is the notebook's batch of 32."""
    from engine.cli import build_parser
    from engine.cli.train import config_from_args

    def config(*extra):
        args = build_parser().parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), *extra])
        return config_from_args(args)

    default = config()
    assert default.recipe == "allblast" and default.batch_size == 16 and default.ema_decay == 0.998
    assert default.tta_eval and default.lr == 1e-3
    paper = config("--recipe", "paper")
    assert paper.batch_size == 32 and paper.ema_decay == 0 and not paper.tta_eval
    assert config("--batch-size", "8", "--lr", "3e-4").batch_size == 8
    assert config("--recipe", "paper", "--lr", "3e-4").lr == 3e-4
    assert {"batch_size", "ema_decay"} <= set(RECIPE_FIELDS)  # recorded in the model card's recipe


def test_warmup_then_cosine_schedule_shape():
    model = torch.nn.Linear(4, 2)
    cfg = recipe_config("allblast", lr=1e-3, schedule="cosine", warmup_epochs=1.0, min_lr=1e-6)
    opt = torch.optim.Adamax(model.parameters(), lr=cfg.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=4)
    lrs = []
    for step in range(1, 41):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    warm, decay = lrs[:10], lrs[10:]
    assert all(a < b for a, b in zip(warm, warm[1:])) and warm[0] < 0.2e-3  # linear warm-up
    assert lrs[9] == pytest.approx(1e-3)  # the peak at the end of the warm-up
    assert all(a > b for a, b in zip(decay, decay[1:]))  # then only down
    assert decay[-1] == pytest.approx(1e-6, abs=1e-9)  # to the floor at the last step
    mid = lrs[9 + 15]  # half-way through the cosine: half the way down
    assert mid == pytest.approx((1e-3 + 1e-6) / 2, rel=0.02)
    assert build_scheduler(opt, recipe_config("paper"), 10, 4) is None  # the paper halves on plateaus


def test_backbone_learns_slower_than_the_head():
    from engine.learn.model import CellClassifier

    model = CellClassifier("tf_efficientnet_lite0", 3)
    opt = build_optimizer(model, recipe_config("allblast", lr=1e-3, backbone_lr_scale=0.5))
    backbone, head = opt.param_groups
    assert backbone["lr"] == 5e-4 and head["lr"] == 1e-3
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    assert len(build_optimizer(model, recipe_config("paper")).param_groups) == 1


def test_ema_follows_the_weights_with_its_warm_up():
    model = torch.nn.Linear(3, 1, bias=False)
    ema = build_ema(model, recipe_config("allblast", ema_decay=0.999))
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=5)  # early steps: the warm-up keeps the decay low (0.66 here), the EMA moves a lot
    moved = ema.module.weight.detach() - start
    assert torch.all(moved > 0.1) and torch.all(moved < 1.0)  # part of the way, not all of it
    for step in range(6, 200):
        ema.update(model, step=step)
    assert torch.allclose(ema.module.weight, model.weight, atol=0.05)  # it catches up with still weights
    assert build_ema(model, recipe_config("paper")) is None


def _cell_image(size=96) -> np.ndarray:
    """A purple disc (the cell) centred on a pink background, with texture."""
    rng = np.random.default_rng(0)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (230, 190, 200)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.22) ** 2
    img[disc] = (110, 50, 150)
    noise = rng.integers(-20, 21, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def test_augmentations_keep_uint8_and_the_cell():
    img = _cell_image()
    extremes = np.zeros_like(img)
    extremes[::2] = 255  # saturated pixels must stay in range, not wrap around
    for seed in range(50):
        rng = np.random.default_rng(seed)
        for out in (stain_jitter(img, rng, 1.0), soft_blur(img, rng), cell_crop(img, rng, 0.5),
                    stain_jitter(extremes, rng, 3.0), Augment(1.0, 1.0, 0.7)(img, rng)):
            assert out.dtype == np.uint8 and out.shape == img.shape
        # the crop always contains the central half of each side, where the cell is
        top, left, h, w = crop_box((96, 80), rng, 0.3)
        c0, c1 = (96 - 48) // 2, (96 - 48) // 2 + 48
        d0, d1 = (80 - 40) // 2, (80 - 40) // 2 + 40
        assert top <= c0 and top + h >= c1 and left <= d0 and left + w >= d1 and KEEP == 0.5
        assert 0 <= top and top + h <= 96 and 0 <= left and left + w <= 80
        # stain jitter changes the colour a little: the cell stays darker and bluer than the background
        j = stain_jitter(img, rng, 1.0).astype(int)
        centre, corner = j[40:56, 40:56].mean((0, 1)), j[:8, :8].mean((0, 1))
        assert centre.sum() < corner.sum() - 150 and centre[2] > centre[1]
        assert np.abs(j - img.astype(int)).mean() < 40  # at most ~15% brightness + a few degrees of hue


def test_extra_augmentation_is_drawn_by_the_sampler(pbc_dir):
    """The item's extra augmentation is fixed by the sampler's seed (not by workers); the paper's
    sampler stream is unchanged by the option's existence."""
    data = scan(pbc_dir / "platelet", verify=False)
    paths = [c.path for c in data.cells[:4]]
    ds = CellDataset(data.root, paths, [0] * 4, img_size=48, augment=True, extra=Augment(1.0, 0.5, 0.7))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = list(DihedralSampler(4, g1, extra=True)), list(DihedralSampler(4, g2, extra=True))
    assert a == b and max(a) >= 32  # seeds are encoded above the 8 views
    x1, x2 = ds[a[0]][0], ds[a[0]][0]
    assert torch.equal(x1, x2) and x1.dtype == torch.uint8
    plain = list(DihedralSampler(4, torch.Generator().manual_seed(5)))
    assert [i % 32 for i in a] == plain  # the same cells and views as without the extra seeds


def test_a_separate_test_folder_is_the_test_and_everything_else_trains(pbc_dir, tmp_path):
    from engine.learn.fit import fit
    from engine.utils.jobs import drain

    full = scan(pbc_dir, verify=False)
    train = ScanResult(full.root, [c for k in ("lymphocyte", "platelet")
                                   for c in [c for c in full.cells if c.label == k][:8]])
    test_dir = tmp_path / "test"
    for k in ("lymphocyte", "platelet"):
        (test_dir / k).mkdir(parents=True)
        for f in sorted((pbc_dir / k).iterdir())[-3:]:
            (test_dir / k / f.name).symlink_to(f)
    cfg = recipe_config("allblast", backbone="tf_efficientnet_lite0", img_size=48, epochs=1, batch_size=8,
                        ask_every=0, workers=0, split="image", val_fraction=0.25, device="cpu",
                        test_dir=str(test_dir))
    drain(fit(train, tmp_path / "run", cfg))
    rd = RunDir(tmp_path / "run")
    split, card = rd.read_split(), rd.read_model_card()
    assert card["status"] == "completed", card.get("failure")
    assert len(split.test) == 0 and len(split.train) + len(split.val) == 16  # no cell held back
    assert card["test_metrics"]["n"] == 6 and card["test_metrics"]["tta"] is True
    assert card["config"]["test_dir"] == str(test_dir)
