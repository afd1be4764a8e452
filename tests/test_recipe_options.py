"""Recipe options measured for issue 25 (README, "Recipes"): layer-wise LR decay, a head-only first
epoch and a longer EMA warm-up. Off in the paper recipe, whose reference run they must not move
(tests/test_recipes.py); each does what it says."""
from __future__ import annotations

import pytest
import torch

from engine.learn.config import TrainConfig
from engine.learn.model import CellClassifier
from engine.learn.recipes import RECIPE_FIELDS, RECIPES, build_ema, build_optimizer, build_scheduler, recipe_config


def test_new_options_are_recipe_fields_and_off_in_the_paper_recipe():
    assert {"layer_decay", "head_epochs", "ema_warmup_power"} <= set(RECIPE_FIELDS)
    paper = RECIPES["paper"]
    assert paper["layer_decay"] == 1 and paper["head_epochs"] == 0 and paper["ema_warmup_power"] == pytest.approx(2 / 3)
    for bad in ({"layer_decay": 0}, {"head_epochs": -1}, {"ema_warmup_power": 1.5}):
        with pytest.raises(ValueError):
            TrainConfig(**bad).validate()


def test_layer_decay_gives_each_stage_a_smaller_lr_than_the_next():
    model = CellClassifier("tf_efficientnet_lite0", 3)
    opt = build_optimizer(model, recipe_config("allblast", lr=1e-3, layer_decay=0.8))
    *stages, head = opt.param_groups
    assert not head["backbone"] and head["lr"] == 1e-3 and head["lr_scale"] == 1
    assert all(g["backbone"] for g in stages) and len(stages) >= 5
    lrs = [g["lr"] for g in stages]
    assert all(a < b for a, b in zip(lrs, lrs[1:]))  # the stem learns slowest
    assert lrs[-1] == pytest.approx(0.8e-3) and lrs[-2] == pytest.approx(0.64e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_head_first_freezes_the_backbone_then_lets_it_learn():
    model = CellClassifier("test_efficientnet", 2)
    cfg = recipe_config("allblast", lr=1e-3, head_epochs=1.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4, epochs=3)
    backbone, head = opt.param_groups
    assert backbone["lr"] == 0 and head["lr"] == 1e-3
    assert not any(p.requires_grad for p in model.backbone.parameters())
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    model.train()
    for step in range(1, 5):  # the head-only epoch
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        assert all(p.grad is None for p in model.backbone.parameters())  # no backward through it
        opt.step()
        sched.step_update(num_updates=step)
    for k, v in model.backbone.state_dict().items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics follow the data
            assert torch.equal(v, start[k]), k
    assert backbone["lr"] == 1e-3 and all(p.requires_grad for p in model.backbone.parameters())
    for g in opt.param_groups:  # the plateau halves every group; the backbone keeps the head's LR
        g["lr"] *= 0.5
    sched.step_update(num_updates=5)
    assert backbone["lr"] == head["lr"] == 5e-4
    # A resumed run past the head-only epoch starts unfrozen.
    opt2 = build_optimizer(model, cfg)
    build_scheduler(opt2, cfg, steps_per_epoch=4, epochs=3, done_updates=4)
    assert opt2.param_groups[0]["lr"] == 1e-3 and all(p.requires_grad for p in model.backbone.parameters())
    assert build_scheduler(opt, recipe_config("allblast"), 4, 3) is None


def test_ema_warmup_power_makes_the_average_longer():
    model = torch.nn.Linear(2, 1)
    short = build_ema(model, recipe_config("allblast"))
    long = build_ema(model, recipe_config("allblast", ema_warmup_power=0.75))
    assert long.get_decay(262) > short.get_decay(262) > 0.97  # 3 epochs of 87 updates
    assert short.get_decay(262) == pytest.approx(1 - 262 ** (-2 / 3))
