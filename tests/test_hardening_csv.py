"""Label-CSV import never hides, misplaces or overwrites an expert's work (issue 11).

Each test builds a small PBC folder (real images, copied into tmp_path) and imports a label CSV
that is wrong in one way: a path that leads outside the folder, rows that disagree, a quote left
open, a runaway field. The import either does exactly what the file says or changes nothing and
says, in one line, what to fix.
"""
from __future__ import annotations

import shutil

import pytest

from engine.cli import main
from engine.data.labelfiles import LabelFileError
from engine.data.scan import scan
from engine.labels.csv_io import import_csv
from engine.labels.project import open_dataset
from engine.labels.store import LabelStore

TARGET = "basophil/BA_112418.jpg"  # a real PBC basophil; "other_dataset" has a neutrophil of that name


@pytest.fixture
def data(pbc_dir, tmp_path):
    """data/basophil (3 images, TARGET first) and data/neutrophil (2 images), copied and indexed
    (its label store beside it holds the folder labels)."""
    root = tmp_path / "data"
    for cls, n in (("basophil", 3), ("neutrophil", 2)):
        (root / cls).mkdir(parents=True)
        names = sorted(p.name for p in (pbc_dir / cls).iterdir())
        if cls == "basophil":
            names = ["BA_112418.jpg"] + [n_ for n_ in names if n_ != "BA_112418.jpg"]
        for name in names[:n]:
            shutil.copyfile(pbc_dir / cls / name, root / cls / name)
    open_dataset(root).close()
    return root


def cells(root, cls):
    return sorted(f"{cls}/{p.name}" for p in (root / cls).iterdir())


def labels_now(root):
    with LabelStore.open(root) as store:
        return {path: st.current for path, st in store.states().items()}


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main(["-q", *[str(a) for a in argv]])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def test_a_path_outside_the_folder_is_missing_never_matched_by_name(data, tmp_path, capsys):
    """Item 1: `../../other_dataset/neutrophil/BA_112418.jpg` used to relabel basophil/BA_112418.jpg."""
    b2, b3 = [c for c in cells(data, "basophil") if c != TARGET]
    csv_path = data / "labels.csv"
    csv_path.write_text(
        "path,label\n"
        "../../other_dataset/neutrophil/BA_112418.jpg,neutrophil\n"  # outside the data root
        "neutrophil/BA_112418.jpg,neutrophil\n"  # a folder inside the root that does not hold it
        f"{b2.split('/')[1]},neutrophil\n"  # a bare, unique file name: allowed
        f"../data/{b3},neutrophil\n"  # `..` that stays inside the root names that cell
    )
    assert main(["-q", "labels", "set", str(data), TARGET, "basophil"]) == 0  # the expert's word
    with LabelStore.open(data) as store:
        report = import_csv(store, csv_path, annotator="importer")
        assert report.missing == ["../../other_dataset/neutrophil/BA_112418.jpg", "neutrophil/BA_112418.jpg"]
        assert (report.applied, report.problems) == (2, [])
        now = {p: st.current for p, st in store.states().items()}
    assert (now[TARGET], now[b2], now[b3]) == ("basophil", "neutrophil", "neutrophil")
    # the scan reads label files with the same rules
    scanned = {c.path: (c.label, c.label_source) for c in scan(data, labels=csv_path, verify=False).cells}
    assert scanned[TARGET] == ("basophil", "folder")
    assert scanned[b2] == ("neutrophil", "csv")


def test_conflicting_rows_import_nothing_unless_last_wins(data, tmp_path, capsys):
    """Item 2: the last of two disagreeing rows used to win silently."""
    b1, b2, _ = cells(data, "basophil")
    n1, _ = cells(data, "neutrophil")
    # not folder classes: labels outside the class set are refused (tests/test_classes.py)
    assert main(["-q", "labels", "classes", str(data), "--add", "monocyte", "--add", "lymphocyte"]) == 0
    assert main(["-q", "labels", "set", str(data), n1, "monocyte", "--annotator", "Dr. A"]) == 0
    before = labels_now(data)
    conflict = tmp_path / "conflict.csv"
    conflict.write_text(
        "path,label\n"
        f"{b2},neutrophil\n"
        f"{b2},neutrophil\n"  # an identical duplicate: harmless
        f"{b1},eosinophil\n"  # line 4 ...
        f"{n1},basophil\n"
        f"./{b1},lymphocyte\n"  # ... and line 6 give the same cell different labels
    )
    code, out, err = run_cli(capsys, "labels", "import", data, conflict)
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    for part in (b1, "line 4 'eosinophil'", "line 6 'lymphocyte'", "--last-wins", "nothing was imported"):
        assert part in err[0], (part, err[0])
    assert labels_now(data) == before, "a refused import must change nothing"

    duplicates = tmp_path / "duplicates.csv"
    duplicates.write_text(f"path,label\n{b2},neutrophil\n{b2},neutrophil\n")
    code, out, _ = run_cli(capsys, "labels", "import", data, duplicates)
    assert code == 0 and "applied 1" in out and labels_now(data)[b2] == "neutrophil"

    code, out, _ = run_cli(capsys, "labels", "import", data, conflict, "--last-wins")
    assert code == 0 and "conflicts 1" in out
    after = labels_now(data)
    assert (after[b1], after[b2], after[n1]) == ("lymphocyte", "neutrophil", "basophil")


@pytest.mark.parametrize("text, line", [
    # the quote opens in the path on line 4 (line 3 is blank) and swallows the rest of the file
    ('path,label\n{b1},neutrophil\n\n"{b2},neutrophil\n{n1},basophil\n{n2},basophil\n', 4),
    # ... in the label on line 3
    ('path,label\n{b1},neutrophil\n{b2},"neutrophil\n{n1},basophil\n', 3),
    # ... on the last line, with no newline after it: only that row is swallowed
    ('path,label\n{b1},neutrophil\n{b2},neutrophil\n"{n1},basophil', 4),
    # ... in the header
    ('"path,label\n{b1},neutrophil\n', 1),
], ids=["in-a-path", "in-a-label", "on-the-last-line", "in-the-header"])
def test_an_unbalanced_quote_is_refused_at_the_line_it_opened(data, tmp_path, capsys, text, line):
    """Item 3: an open quote used to swallow the rest of the file, shown only as 'missing images 1'."""
    (b1, b2, _), (n1, n2) = cells(data, "basophil"), cells(data, "neutrophil")
    csv_path = tmp_path / "quote.csv"
    csv_path.write_text(text.format(b1=b1, b2=b2, n1=n1, n2=n2))
    before = labels_now(data)
    code, _, err = run_cli(capsys, "labels", "import", data, csv_path)
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert f"quote.csv, line {line}:" in err[0] and "quote" in err[0].split(":", 2)[-1]
    assert labels_now(data) == before  # line 2 was fine, but nothing of the file is applied
    with LabelStore.open(data) as store, pytest.raises(LabelFileError, match=f"line {line}:"):
        import_csv(store, csv_path, annotator="a")


def test_a_huge_field_is_a_one_line_error_naming_file_and_line(data, tmp_path, capsys):
    """Item 4: a field over 131,072 characters used to end the import with `_csv.Error`."""
    b1, b2, _ = cells(data, "basophil")
    csv_path = tmp_path / "huge.csv"
    csv_path.write_text(f"path,label\n{b1},neutrophil\n{b2}," + "x" * 200_000 + f"\n{b1},basophil\n")
    before = labels_now(data)
    code, _, err = run_cli(capsys, "labels", "import", data, csv_path)
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert "huge.csv, line 3:" in err[0] and "131,072 characters" in err[0]
    assert labels_now(data) == before
