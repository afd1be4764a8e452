"""Issue 24: cell embeddings kept by a prediction pass, the next cells to label, look-alikes.

The real-cell tests train a Lite0 (ImageNet backbone, head trained on 6 PBC cells per class) and
predict real PBC cells through the engine's prediction pass, at 96 px to stay fast on a CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.scan import scan
from engine.learn.embeddings import (EMBEDDING_DTYPE, as_stored, bytes_per_cell, from_bytes, pairwise_cosine,
                                     similar, to_bytes, unit)
from engine.learn.headfit import HeadSettings, fit_head, head_logits, load_head, probabilities, round_split
from engine.learn.inference import predict
from engine.learn.model import build_model, load_model, save_model
from engine.learn.suggest import STRATEGIES, class_quota, suggest

LITE0 = "tf_efficientnet_lite0"


# ---- pure numpy -----------------------------------------------------------------------------
def test_margin_entropy_random_orders():
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33], [0.6, 0.4, 0.0], [0.5, 0.5, 0.0]],
                     np.float32)
    assert suggest(probs, n=3, strategy="margin").indices.tolist() == [4, 2, 1]  # a tie 0.0 vs 0.01: 4 first
    assert suggest(probs, n=2, strategy="entropy").indices.tolist() == [2, 1]
    cand = np.array([True, True, False, True, True])
    assert 2 not in suggest(probs, n=4, strategy="margin", candidates=cand).indices
    r1 = suggest(probs, n=3, strategy="random", seed=5).indices
    assert r1.tolist() == suggest(probs, n=3, strategy="random", seed=5).indices.tolist()
    assert len(set(r1.tolist())) == 3
    assert len(suggest(probs, n=99, strategy="margin")) == 5
    assert len(suggest(probs, n=3, strategy="margin", candidates=np.zeros(5, bool))) == 0
    with pytest.raises(ValueError, match="unknown strategy"):
        suggest(probs, strategy="smart")
    with pytest.raises(ValueError, match="embedding"):
        suggest(probs, strategy="diverse")


def test_class_quota_water_fills():
    assert class_quota([10, 10, 10], 24).tolist() == [8, 8, 8]
    assert class_quota([1, 50, 3, 100], 24).tolist() == [1, 10, 3, 10]
    assert class_quota([0, 5], 24).tolist() == [0, 5]
    assert class_quota([3] * 8, 5).sum() == 5 and class_quota([3] * 8, 5).max() == 1


def test_diverse_spreads_over_clusters_and_balances_classes():
    """Four tight clusters of look-alikes. The most doubtful cells are five copies of one look
    (cluster 0); the next most doubtful are two of each other cluster. Margin takes the copies;
    diverse, among the 2n most doubtful, one of each look it can reach before any second."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32)) * 5
    emb = np.concatenate([c + rng.normal(scale=0.05, size=(25, 32)) for c in centres])
    cluster = np.repeat(np.arange(4), 25)
    margin_of = np.full(100, 0.9)
    margin_of[:5] = np.linspace(0, 0.004, 5)  # cluster 0: the five most doubtful
    margin_of[[25, 26, 50, 51, 75, 76]] = 0.01  # two of each other cluster: the next
    probs = np.stack([(1 + margin_of) / 2, (1 - margin_of) / 2], 1).astype(np.float32)
    margin = suggest(probs, n=4, strategy="margin", embeddings=emb)
    diverse = suggest(probs, n=4, strategy="diverse", embeddings=emb, balance=False)
    assert set(cluster[margin.indices]) == {0}
    assert set(cluster[diverse.indices]) == {0, 1, 2}  # the 8 eligible: five of 0, 25, 26, 50
    assert diverse.indices[0] == 0  # the most doubtful first
    assert pairwise_cosine(emb[diverse.indices], emb.mean(0)).mean() < pairwise_cosine(emb[margin.indices],
                                                                                       emb.mean(0)).mean()
    # already labelled cells count as covered: their look is asked about last
    labelled = cluster == 1
    picks = suggest(probs, n=3, strategy="diverse", embeddings=emb, labelled=labelled, candidates=~labelled,
                    balance=False)
    assert 1 not in set(cluster[picks.indices]) and {0, 2} <= set(cluster[picks.indices])
    # class balance over the predicted classes: 3 doubtful cells predicted 0, the rest 1 -> both asked about
    p = np.tile([[0.45, 0.55]], (100, 1)).astype(np.float32)
    p[:3] = [0.55, 0.45]
    s = suggest(p, n=6, strategy="diverse", embeddings=emb)
    assert sorted(np.bincount(s.predicted, minlength=2).tolist()) == [3, 3]
    assert len(suggest(p, n=6, strategy="diverse", embeddings=emb, balance=False)) == 6


def test_embedding_storage_and_similarity():
    x = np.random.default_rng(1).normal(size=(10, 1280)).astype(np.float32)
    stored = as_stored(x)
    assert stored.dtype == EMBEDDING_DTYPE and bytes_per_cell(1280) == 2560 == len(to_bytes(x[0]))
    back = from_bytes([to_bytes(r) for r in x])
    assert back.shape == (10, 1280) and np.allclose(back, x, atol=2e-3)
    assert as_stored(np.array([[1e6, -1e6]])).tolist() == [[65504.0, -65504.0]]
    x[7] = x[3] * 2 + 0.01  # a look-alike of cell 3
    idx, sims = similar(x, 3, k=4)
    assert idx[0] == 7 and 3 not in idx and len(idx) == 4 and np.all(np.diff(sims) <= 0)
    assert similar(x, 3, k=4, candidates=np.arange(10) != 7)[0][0] != 7
    assert np.allclose(np.linalg.norm(unit(x), axis=1), 1, atol=1e-5)


# ---- real cells -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(pbc_dir, tmp_path_factory):
    """A Lite0 whose head learned on 6 PBC cells per class (its ImageNet backbone kept), and its
    predictions of 34 other cells per class, made by the engine's prediction pass."""
    torch.manual_seed(0)
    data = scan(pbc_dir, verify=False)
    classes = sorted({c.label for c in data.cells})
    by_class = {k: [c for c in data.cells if c.label == k] for k in classes}
    rng = np.random.default_rng(0)
    picked = {k: [v[i] for i in rng.choice(len(v), 40, replace=False)] for k, v in by_class.items()}
    train = [c for k in classes for c in picked[k][:6]]
    rest = [c for k in classes for c in picked[k][6:]]
    model, spec, _ = build_model(LITE0, classes, img_size=96)
    first = predict(model, spec, data.root, train, batch_size=48)
    assert first.embeddings.shape == (48, model.backbone.num_features)
    y = np.array([classes.index(c.label) for c in train])
    fit = fit_head(first.embeddings, y, len(classes), settings=HeadSettings(updates=300))
    state = model.state_dict()
    state.update(fit.state)
    model.load_state_dict(state)
    path = tmp_path_factory.mktemp("loop") / "model.pt"
    save_model(path, model, spec)
    model, spec, _ = load_model(path)
    pred = predict(model, spec, data.root, rest, batch_size=64)
    truth = np.array([classes.index(c.label) for c in rest])
    return {"pred": pred, "truth": truth, "classes": classes, "model": model, "spec": spec, "fit": fit,
            "cells": rest, "first": first}


def test_prediction_pass_keeps_float16_embeddings_that_the_head_reads(trained):
    pred, model = trained["pred"], trained["model"]
    assert pred.embeddings.dtype == np.float16 and pred.embeddings.shape == (len(pred), 1280)
    # the head on the stored embedding gives the pass's probabilities (float16 rounding aside)
    head = load_head({f"head.{k}": v for k, v in model.head.state_dict().items()}, 1280, len(trained["classes"]))
    again = probabilities(head_logits(head, pred.embeddings))
    assert np.abs(again - pred.probs).max() < 0.02
    assert (again.argmax(1) == pred.probs.argmax(1)).mean() > 0.97
    # duplicates copy their original's embedding
    dup = pred.with_duplicates({"copy.jpg": pred.paths[0]})
    assert np.array_equal(dup.embeddings[dup.paths.index("copy.jpg")], pred.embeddings[0])


def test_suggested_batch_holds_more_misclassified_cells_than_random(trained):
    pred, truth = trained["pred"], trained["truth"]
    wrong = pred.probs.argmax(1) != truth
    assert 0.05 < wrong.mean() < 0.95, f"an untrained or perfect model proves nothing ({wrong.mean():.2f} wrong)"
    n = 24
    random_hits = [wrong[suggest(pred.probs, n=n, strategy="random", seed=s).indices].sum() for s in range(20)]
    for strategy in ("margin", "entropy", "diverse"):
        hits = wrong[suggest(pred.probs, n=n, strategy=strategy, embeddings=pred.embeddings).indices].sum()
        assert hits > np.mean(random_hits), (strategy, hits, np.mean(random_hits))
    hits = wrong[suggest(pred.probs, n=n, strategy="margin").indices].sum()
    assert hits > wrong[suggest(pred.probs, n=n, strategy="random", seed=0).indices].sum()


def test_diverse_picks_fewer_near_duplicates_than_margin(trained):
    pred = trained["pred"]
    emb = pred.embeddings
    folder_mean = emb.astype(np.float32).mean(0)
    margin = suggest(pred.probs, n=24, strategy="margin", embeddings=emb)
    diverse = suggest(pred.probs, n=24, strategy="diverse", embeddings=emb)
    cos_m = pairwise_cosine(emb[margin.indices], folder_mean)
    cos_d = pairwise_cosine(emb[diverse.indices], folder_mean)
    assert cos_d.mean() < cos_m.mean()
    assert (cos_d > 0.5).sum() < (cos_m > 0.5).sum()  # pairs of look-alikes
    # and it asks about more of the predicted classes
    assert len(set(diverse.predicted.tolist())) >= len(set(margin.predicted.tolist()))


def test_similar_cells_share_the_class(trained):
    """A cell's nearest neighbours by embedding share its class far above chance (1 in 8), even with
    this small model's ImageNet backbone at 96 px (what Find Similar relies on)."""
    pred, truth = trained["pred"], trained["truth"]
    same = [np.mean(truth[similar(pred.embeddings, i, k=5)[0]] == truth[i]) for i in range(0, len(truth), 7)]
    assert np.mean(same) > 3 / len(trained["classes"])


def test_round_split_keeps_patients_apart(cnmc_dir):
    data = scan(cnmc_dir / "training_data", verify=False)
    split = round_split([c for c in data.cells if c.label], seed=0)
    patient = {c.path: c.patient for c in data.cells}
    assert split.val and not {patient[p] for p in split.train} & {patient[p] for p in split.val}
    assert split.test == []


def test_strategies_listed():
    assert STRATEGIES == ("margin", "entropy", "diverse", "random")


def test_onnx_export_of_an_older_version_is_redone_with_the_embedding_output(tmp_path, cnmc_dir):
    """An inference cache made by an earlier allblast holds a model.onnx with logits only: it is
    exported again, and ONNX Runtime then gives each cell's embedding too (as torch does)."""
    pytest.importorskip("onnxruntime")
    from engine.learn.backends.loader import onnx_model, open_predictor
    from engine.learn.backends.onnx_export import export_onnx, has_embedding_output
    from engine.utils.files import sha256_file

    torch.manual_seed(0)
    model, spec, _ = build_model(LITE0, ("all", "hem"), img_size=32)
    path = tmp_path / "m.pt"
    save_model(path, model, spec)
    entry = tmp_path / "entry"
    entry.mkdir()
    export_onnx(model, spec, entry / "model.onnx")  # what an earlier version cached
    assert not has_embedding_output(entry / "model.onnx")
    onnx_model(path, sha256_file(path), entry)
    assert has_embedding_output(entry / "model.onnx")
    data = scan(cnmc_dir / "training_data", verify=False)
    ort = open_predictor(path, backend="onnxruntime", device="cpu")
    ref = open_predictor(path, backend="torch", device="cpu")
    a = predict(ort.backend, ort.spec, data.root, data.cells[:4], batch_size=4)
    b = predict(ref.backend, ref.spec, data.root, data.cells[:4], batch_size=4)
    assert a.embeddings.shape == b.embeddings.shape == (4, 1280)
    assert np.abs(a.embeddings.astype(np.float32) - b.embeddings.astype(np.float32)).max() < 0.01


def test_a_listed_filter_shows_only_those_cells_in_their_order():
    from allblast_gui.cells.rows import CellFilter, CellRow, apply_filter

    rows = [CellRow(f"c{i}.png", f"c{i}.png", None, None, None) for i in range(6)]
    listed = ("c4.png", "c1.png", "c5.png", "missing.png")
    assert [rows[i].path for i in apply_filter(rows, CellFilter(listed=listed, sort="listed"))] == \
        ["c4.png", "c1.png", "c5.png"]
    assert [rows[i].path for i in apply_filter(rows, CellFilter(listed=listed))] == ["c1.png", "c4.png", "c5.png"]
    assert len(apply_filter(rows, CellFilter(sort="listed"))) == 6  # no list: every cell, by name
