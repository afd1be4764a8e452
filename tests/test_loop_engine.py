"""Issue 24, the engine's half of the expert loop on real cells: embeddings stored with the
predictions (bytes per cell), suggestions and look-alikes read back from the store, a Keep Learning
round from the active model (a normal run whose card records the loop), the `suggest` command."""
from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.labels import predictions as stored
from engine.labels.store import LabelStore
from engine.learn.embeddings import bytes_per_cell
from engine.learn.model import build_model, read_checkpoint, save_model
from engine.utils.jobs import CancelToken, drain
from engine.workspace.catalog import RunsCatalog
from engine.workspace.loop import LoopInfo, continue_round, expert_label_count, loop_of
from engine.workspace.predict_store import run_prediction
from engine.workspace.suggestions import similar_stored, suggest_stored, unlabelled_paths

LITE0 = "tf_efficientnet_lite0"
CNMC_CLASSES = ("all", "hem")


def _model(path: Path, classes, img_size=64, seed=0) -> Path:
    torch.manual_seed(seed)
    model, spec, _ = build_model(LITE0, classes, img_size=img_size)
    save_model(path, model, spec)
    return path


@pytest.fixture
def cnmc_store(cnmc_dir, tmp_path):
    """The C-NMC samples' training folder with its label store in tmp (the data is read in place)."""
    from engine.labels.project import open_dataset

    project = open_dataset(cnmc_dir / "training_data", db_path=tmp_path / "db" / "project.sqlite")
    yield project
    project.close()


def _predict(project, model_path, **kw):
    return drain(run_prediction(project.store, project.root, project.scan.cells, model_path, tta=False, batch_size=8,
                                device="cpu", cancel=CancelToken(), backend="torch", **kw))


def test_prediction_pass_stores_float16_embeddings(cnmc_store, tmp_path):
    project = cnmc_store
    model_path = _model(tmp_path / "m.pt", CNMC_CLASSES)
    db = project.store.db_path
    result = _predict(project, model_path)
    sha = stored.models(project.store)[0].sha256
    paths, emb = stored.load_embeddings(project.store, sha)
    assert emb.dtype == np.float16 and emb.shape == (len(project.scan.cells), 1280)
    assert sorted(paths) == sorted(result.paths)
    order = [paths.index(p) for p in result.paths]
    assert np.array_equal(emb[order], result.embeddings)
    assert bytes_per_cell(emb.shape[1]) == 2560
    # a subset, in the order asked
    sub = stored.load_embeddings(project.store, sha, result.paths[:3])
    assert np.array_equal(sub, result.embeddings[:3])
    # predicting again with the same model replaces, never duplicates
    _predict(project, model_path)
    con = sqlite3.connect(db)
    assert con.execute("SELECT SUM(json_array_length(paths)) FROM embeddings").fetchone()[0] == len(result.paths)
    con.close()


def test_suggest_and_similar_from_the_store(cnmc_store, tmp_path):
    project = cnmc_store
    _predict(project, _model(tmp_path / "m.pt", CNMC_CLASSES))
    store = project.store
    sha = stored.models(store)[0].sha256
    states = store.states()
    cand = unlabelled_paths(states)
    assert cand == set(states)  # only the data set's own labels: no expert has labelled anything
    margin = suggest_stored(store, sha, n=5, strategy="margin", candidates=cand)
    diverse = suggest_stored(store, sha, n=5, strategy="diverse", candidates=cand)
    assert len(margin) == len(diverse) == 5 and len(set(diverse.paths)) == 5
    _, _, m, _ = __import__("engine.learn.uncertainty", fromlist=["summarise"]).summarise(margin.probs)
    assert np.all(np.diff(m) >= 0)  # most doubtful first
    header, rows = margin.rows({p: "1" for p in margin.paths})
    assert header[:2] == ["path", "patient"] and header[-2:] == ["rank", "strategy"]
    assert [r[-2] for r in rows] == ["1", "2", "3", "4", "5"] and rows[0][-1] == "margin"
    store.set_label(margin.paths[0], "hem", annotator="expert")
    again = suggest_stored(store, sha, n=5, strategy="margin", candidates=unlabelled_paths(store.states()))
    assert margin.paths[0] not in again.paths
    near = similar_stored(store, sha, margin.paths[0], k=4)
    assert len(near) == 4 and margin.paths[0] not in [p for p, _ in near]
    assert all(a >= b for (_, a), (_, b) in zip(near, near[1:]))


def test_continue_round_is_a_run_of_the_loop(cnmc_store, tmp_path):
    project = cnmc_store
    store = project.store
    model_path = _model(tmp_path / "m.pt", CNMC_CLASSES)
    catalog = RunsCatalog(store)
    catalog.set_active(model_path)
    # the active model never predicted here: the round predicts first, keeping the embeddings
    for p in [c.path for c in project.scan.cells][:3]:
        store.set_label(p, "hem", annotator="expert")
    info = LoopInfo("loop-test", 1, "diverse", expert_label_count(store.states()), 0, "continue")
    events = []
    gen = continue_round(store, project.root, info, cancel=CancelToken(), batch_size=8, backend="torch")
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    names = [type(e).__name__ for e in events]
    assert "TrainingStarted" in names and "EpochEnd" in names and names[-1] == "TrainingFinished"
    assert result.run_dir.parent == catalog.root and catalog.active_model_file() == result.model_path
    card = json.loads((result.run_dir / "model_card.json").read_text())
    assert card["status"] == "completed" and card["loop"]["strategy"] == "diverse"
    assert card["loop"]["expert_labels"] == 3 and card["loop"]["round"] == 1 and card["loop"]["id"] == "loop-test"
    assert card["split"]["by_patient"] and loop_of(result.run_dir)["start"] == "continue"
    split = json.loads((result.run_dir / "split.json").read_text())
    patient = {c.path: c.patient for c in project.scan.cells}
    assert not {patient[p] for p in split["train"]} & {patient[p] for p in split["val"]}
    spec, weights, extras = read_checkpoint(result.model_path)
    _, parent_weights, _ = read_checkpoint(model_path)
    assert torch.equal(weights["backbone.conv_stem.weight"], parent_weights["backbone.conv_stem.weight"])
    assert extras["loop"]["round"] == 1 and (result.run_dir / "metrics.jsonl").is_file()
    # the folder's predictions by the new model, sharing the parent's embeddings
    new = stored.load(store, result.record.sha256)
    assert len(new.paths) == len(project.scan.cells)
    paths, emb = stored.load_embeddings(store, result.record.sha256)
    parent_paths, parent_emb = stored.load_embeddings(store, info.parent)
    assert paths == parent_paths and np.array_equal(emb, parent_emb)
    con = sqlite3.connect(store.db_path)
    assert con.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (result.record.sha256,)).fetchone()[0] == 0
    con.close()
    assert any(r.path == result.run_dir for r in catalog.runs())


def test_suggest_command_writes_the_batch_in_order(cnmc_dir, tmp_path):
    model_path = _model(tmp_path / "m.pt", CNMC_CLASSES)
    out = tmp_path / "suggest.csv"
    db = tmp_path / "db" / "project.sqlite"
    cmd = [sys.executable, "-m", "engine.cli", "-q", "suggest", str(model_path), str(cnmc_dir / "training_data"),
           "--n", "6", "--strategy", "diverse", "--out", str(out), "--db", str(db), "--backend", "torch"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]
    assert {r["strategy"] for r in rows} == {"diverse"} and {"p_all", "p_hem", "margin", "entropy", "patient"} <= set(rows[0])
    # a second call reuses the stored predictions (no prediction pass): same batch, fast
    again = subprocess.run(cmd[:-4] + ["--out", str(tmp_path / "again.csv"), "--db", str(db), "--backend", "torch"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [r["path"] for r in csv.DictReader((tmp_path / "again.csv").open())] == [r["path"] for r in rows]
    printed = subprocess.run(cmd[:-6] + ["--strategy", "margin", "--db", str(db), "--backend", "torch"],
                             capture_output=True, text=True, timeout=600)
    assert printed.returncode == 0 and "1." in printed.stdout and "predicted" in printed.stdout


def test_a_version_3_database_gains_the_embeddings_and_keeps_its_predictions(tmp_path):
    from engine.labels import schema

    root = tmp_path / "data"
    root.mkdir()
    db = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(db)  # what allblast wrote at schema 3: predictions, no embeddings
    for script in (schema._SCHEMA, schema._SCHEMA_V2, schema._SCHEMA_V3):
        conn.executescript(script)
    probs = np.array([0.25, 0.75], np.float32).tobytes()
    conn.executescript("INSERT INTO meta(key, value) VALUES ('created_at', 't');"
                       "INSERT INTO cells(path, original, patient, label_source, present, first_seen, last_seen) "
                       "VALUES ('c1.png', 'all', '1', 'folder', 1, 't', 't');"
                       "INSERT INTO models(sha256, path, name, classes, temperature, tta, predicted_at) "
                       "VALUES ('abc', '/m.pt', 'm', '[\"all\", \"hem\"]', 1.0, 0, 't');"
                       "PRAGMA user_version = 3;")
    conn.execute("INSERT INTO predictions(model, path, probs) VALUES ('abc', 'c1.png', ?)", (probs,))
    conn.commit()
    conn.close()
    with LabelStore.open(root, db_path=db) as store:
        assert store.query("PRAGMA user_version")[0][0] >= 4
        assert stored.load(store, "abc").probs.tolist() == [[0.25, 0.75]]
        assert stored.load_embeddings(store, "abc") is None  # predicted before embeddings were kept
        with pytest.raises(ValueError, match="predict the folder again"):
            suggest_stored(store, "abc", n=1, strategy="diverse")
        assert suggest_stored(store, "abc", n=1, strategy="margin").paths == ["c1.png"]
