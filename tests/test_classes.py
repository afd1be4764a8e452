"""Class sets (engine.labels.classes): stored per data set, stable keys, presets, rename / delete
with history and undo, unknown labels refused by `labels set` and `labels import`. No Qt."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data.cells import UNSURE, Cell
from engine.labels import classes as C
from engine.labels.csv_io import UnknownLabelsError, import_csv
from engine.labels.project import open_dataset
from engine.labels.store import LabelStore


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    s = LabelStore.open(root, db_path=tmp_path / "db.sqlite")
    s.sync_cells([Cell("all/a1.png", "all", "P1"), Cell("all/a2.png", "all", "P1"), Cell("hem/h1.png", "hem", "P2"),
                  Cell("new/n1.png", None, None), Cell("new/n2.png", None, None)])
    yield s
    s.close()


def test_the_folders_classes_start_the_set_with_sorted_keys_colours_and_the_positive_class(store):
    cs = C.class_set(store, ["hem", "all"])
    assert list(cs) == ["all", "hem"] and [cs.key_of("all"), cs.key_of("hem")] == [1, 2]
    assert cs.positive == "all"  # C-NMC's blasts
    assert [d.color for d in cs.defs] == list(C.PALETTE[:2])
    assert C.load(store) == cs  # kept in the database, not only computed


def test_a_new_class_never_moves_an_existing_key(store):
    """Regression: a typo set from the CLI ('aaa' sorts first) became class [1]/[2] and moved hem."""
    C.class_set(store, ["all", "hem"])
    added = C.add_class(store, "aaa", annotator="Dr. A")
    cs = C.load(store)
    assert (cs.key_of("all"), cs.key_of("hem"), added.key) == (1, 2, 3)
    assert C.class_set(store, ["all", "hem", "zzz-new-folder"]).key_of("hem") == 2  # a new folder class too


def test_presets_add_what_is_missing_and_the_empty_set_explains_itself(store):
    empty = C.ClassSet()
    assert "no classes yet" in empty.explain_unknown("blast")
    added = C.apply_preset(store, "wbc", annotator="Dr. A")
    assert added == list(C.PRESETS["wbc"].names)
    cs = C.load(store)
    assert cs.positive == "blast" and cs.key_of("neutrophil") == 1 and cs.key_of("other") == 7
    assert C.apply_preset(store, "wbc", annotator="Dr. A") == []  # nothing twice
    assert C.apply_preset(store, "pbc", annotator="Dr. A") == ["erythroblast", "ig", "platelet"]  # the rest overlap
    cs = C.load(store)
    assert len(cs) == 7 + 3 and sum(d.key is not None for d in cs.defs) == C.MAX_KEYS  # nine keys, no more


def test_rename_relabels_its_cells_keeps_history_and_undo_restores_both(store):
    C.class_set(store, ["all", "hem"])
    store.set_label("new/n1.png", "hem", annotator="Dr. A")
    aid, changed = C.rename_class(store, "hem", "normal", annotator="Dr. B")
    assert sorted(changed) == ["hem/h1.png", "new/n1.png"]
    cs = C.load(store)
    assert "hem" not in cs and cs.key_of("normal") == 2 and cs.color_of("normal") == C.PALETTE[1]
    assert store.state("hem/h1.png").current == "normal" and store.state("hem/h1.png").original == "hem"
    assert [h["kind"] for h in C.class_history(store)][-1] == "rename"
    assert sorted(store.undo(annotator="Dr. B")) == ["hem/h1.png", "new/n1.png"]
    assert store.last_class_edit == "rename of hem to normal"
    assert list(C.load(store)) == ["all", "hem"] and store.state("hem/h1.png").current == "hem"
    assert store.state("new/n1.png").current == "hem"  # back to the label set before the rename
    store.redo(annotator="Dr. B")
    assert "normal" in C.load(store) and store.state("new/n1.png").current == "normal"
    assert [h["kind"] for h in C.class_history(store)][-2:] == ["undo rename", "redo rename"]


def test_renaming_an_unused_class_is_an_undoable_step_too(store):
    C.add_class(store, "blast", annotator="Dr. A")
    C.rename_class(store, "blast", "blasts", annotator="Dr. A")
    assert store.undo(annotator="Dr. A") == [] and store.last_class_edit == "rename of blast to blasts"
    assert "blast" in C.load(store)


def test_a_class_in_use_is_not_deleted_silently(store):
    C.class_set(store, ["all", "hem"])
    with pytest.raises(C.ClassSetError, match="1 cell is labelled 'hem'"):
        C.delete_class(store, "hem", annotator="Dr. A")
    assert "hem" in C.load(store) and store.state("hem/h1.png").current == "hem"
    _, changed = C.delete_class(store, "hem", relabel_to="all", annotator="Dr. A")
    assert changed == ["hem/h1.png"] and store.state("hem/h1.png").current == "all" and "hem" not in C.load(store)
    store.undo(annotator="Dr. A")
    assert C.load(store).key_of("hem") == 2 and store.state("hem/h1.png").current == "hem"
    C.delete_class(store, "hem", relabel_to=None, annotator="Dr. A")  # unlabel them
    assert store.state("hem/h1.png").current is None
    assert "hem" not in C.class_set(store, ["all", "hem"])  # nor does its folder, at the next open


def test_a_renamed_class_does_not_come_back_from_its_folder(store):
    C.class_set(store, ["all", "hem"])
    C.rename_class(store, "hem", "normal", annotator="Dr. A")
    assert list(C.class_set(store, ["all", "hem"])) == ["all", "normal"]  # reopening: hem/ is still a folder
    store.undo(annotator="Dr. A")
    assert list(C.class_set(store, ["all", "hem"])) == ["all", "hem"]


def test_keys_swap_colours_validate_names_and_order_leaves_keys_alone(store):
    C.class_set(store, ["all", "hem"])
    C.add_class(store, "blast", annotator="x")
    C.set_key(store, "blast", 1, annotator="x")
    cs = C.load(store)
    assert (cs.key_of("blast"), cs.key_of("all"), cs.key_of("hem")) == (1, 3, 2)
    C.reorder(store, ["hem", "blast", "all"], annotator="x")
    cs = C.load(store)
    assert list(cs) == ["hem", "blast", "all"] and cs.key_of("all") == 3
    C.recolor(store, "hem", "#112233", annotator="x")
    assert C.load(store).color_of("hem") == "#112233"
    for bad in ("", "unsure", "None", "a\x1bb", "x" * 65, "HEM"):
        with pytest.raises(C.ClassSetError):
            C.add_class(store, bad, annotator="x")
    with pytest.raises(C.ClassSetError):
        C.recolor(store, "hem", "red", annotator="x")


def test_close_matches_name_what_a_typo_meant():
    cs = C.ClassSet(C.ClassDef(n, i + 1, C.PALETTE[i], i) for i, n in enumerate(["all", "hem"]))
    assert cs.close_matches("hme") == ["hem"] and cs.close_matches("HEM ") == ["hem"]
    assert "did you mean hem" in cs.explain_unknown("hme")
    assert cs.unknown(["all", UNSURE, None, "blast"]) == ["blast"]


def test_import_with_unknown_labels_imports_nothing_unless_classes_may_be_added(store, tmp_path):
    C.class_set(store, ["all", "hem"])
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nnew/n1.png,blast\nnew/n2.png,hme\nall/a1.png,hem\n")
    with pytest.raises(UnknownLabelsError, match="did you mean hem") as info:
        import_csv(store, csv, annotator="Dr. A")
    assert info.value.labels == ["blast", "hme"]
    assert store.state("all/a1.png").current == "all" and not store.can_undo()  # nothing imported
    report = import_csv(store, csv, annotator="Dr. A", add_classes=True)
    assert report.applied == 3 and report.added_classes == ["blast", "hme"]
    assert C.load(store).key_of("blast") == 3


def test_a_read_only_store_shows_the_data_classes_without_writing(tmp_path, cnmc_dir):
    project = open_dataset(cnmc_dir, db_path=tmp_path / "db.sqlite")
    assert list(project.classes) == ["all", "hem"] and project.classes.positive == "all"
    project.close()


# ------------------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None, env_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_DATA_HOME=str(env_home / "data"), XDG_CACHE_HOME=str(env_home / "cache"))
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_labels_set_typo_is_an_error_naming_the_close_match(tmp_path, cnmc_dir):
    db = tmp_path / "db.sqlite"
    cell = next(p for p in (cnmc_dir / "training_data" / "fold_0" / "all").iterdir()).relative_to(cnmc_dir)
    out = _cli("labels", "set", str(cnmc_dir), str(cell), "hme", "--db", str(db), env_home=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "did you mean hem?" in out.stderr and "Traceback" not in out.stderr
    listed = _cli("labels", "classes", str(cnmc_dir), "--db", str(db), env_home=tmp_path)
    assert "[1] all" in listed.stdout and "[2] hem" in listed.stdout and "hme" not in listed.stdout


def test_cli_classes_add_rename_and_import_add_classes(tmp_path, cnmc_dir):
    db = tmp_path / "db.sqlite"
    run = _cli("labels", "classes", str(cnmc_dir), "--add", "blast", "--rename", "hem", "normal", "--history",
               "--db", str(db), "--annotator", "Dr. A", env_home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "added blast (key 3)" in run.stdout and "renamed hem to normal" in run.stdout
    assert "[2] normal" in run.stdout and "Dr. A: rename hem -> normal" in run.stdout
    cell = next(p for p in (cnmc_dir / "training_data" / "fold_0" / "all").iterdir()).relative_to(cnmc_dir)
    csv = tmp_path / "new.csv"
    csv.write_text(f"path,label\n{cell.as_posix()},lymphoblast\n")
    refused = _cli("labels", "import", str(cnmc_dir), str(csv), "--db", str(db), env_home=tmp_path)
    assert refused.returncode == 2 and "'lymphoblast'" in refused.stderr and "nothing was imported" in refused.stderr
    done = _cli("labels", "import", str(cnmc_dir), str(csv), "--add-classes", "--db", str(db), env_home=tmp_path)
    assert done.returncode == 0 and "applied 1" in done.stdout and "new classes: lymphoblast" in done.stdout
    busy = _cli("labels", "classes", str(cnmc_dir), "--delete", "lymphoblast", "--db", str(db), env_home=tmp_path)
    assert busy.returncode == 2 and "1 cell is labelled 'lymphoblast'" in busy.stderr
    gone = _cli("labels", "classes", str(cnmc_dir), "--delete", "lymphoblast", "--relabel-to", "all",
                "--db", str(db), env_home=tmp_path)
    assert gone.returncode == 0 and "lymphoblast" not in gone.stdout.split("deleted lymphoblast")[1]
