"""Cases and sign-off (engine): a reviewed C-NMC patient becomes a signed, verifiable result.

Real C-NMC cells (patient 1: five ALL blasts; patient H6: five normal cells), linked into a
temporary folder so the label store never touches the shared data. The PDF of a signature is drawn
by the CLI's Qt renderer in one subprocess test; the engine tests draw a stand-in file (the
engine places and hashes whatever the caller draws)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cases.cases import list_cases, resolve_case
from engine.cases.digest import label_digest
from engine.cases.records import amendments, set_two_person, signatures
from engine.cases.review import CONFIRMED, SET, ModelView, snapshot
from engine.cases.signoff import SignOffRefused, sign
from engine.cases.summary import format_table, summarize
from engine.cases.verify import AMENDED, INTACT, TAMPERED, verify_case
from engine.cases.wilson import Fraction, wilson_interval
from engine.data.cells import UNSURE
from engine.labels import reviews
from engine.labels.csv_io import export_csv
from engine.labels.project import open_dataset
from engine.labels.signed import ReasonRequired
from engine.labels.store import LabelStore
from engine.report.case import CaseCell, build_case_report

P1 = [f"fold_0/all/UID_1_{n}_all.bmp" for n in ("1_1", "3_1", "4_2", "8_1", "9_1")]


# ------------------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize("k, n, low, high", [
    (10, 50, 0.1124, 0.3304),  # the reference value
    # Newcombe RG (1998) Statistics in Medicine 17:857-872, table II, method 3 (Wilson score, no correction)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_the_wilson_interval_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_the_wilson_interval_is_the_textbook_quadratic_solution():
    z = 1.959963984540054
    for n in (1, 7, 50, 100, 1000):
        for k in range(0, n + 1, max(1, n // 7)):
            p = k / n
            # the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved for p
            a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
            disc = math.sqrt(b * b - 4 * a * c)
            lo, hi = wilson_interval(k, n)
            assert lo == pytest.approx(max(0.0, (-b - disc) / (2 * a)), abs=1e-12)
            assert hi == pytest.approx(min(1.0, (-b + disc) / (2 * a)), abs=1e-12)
    assert wilson_interval(0, 0) is None and Fraction(0, 0).text().startswith("–")
    assert Fraction(10, 50).text() == "20.0% (95% CI 11.2%–33.0%; 10 of 50 cells)" and Fraction(10, 50).too_few
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


# ------------------------------------------------------------------------------------- helpers
@pytest.fixture
def folder(cnmc_dir, tmp_path, monkeypatch) -> Path:
    """The C-NMC training cells (fold_0/all, fold_0/hem), linked into a folder of our own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cnmc"
    for f in sorted((cnmc_dir / "training_data").rglob("*.bmp")):
        target = root / f.relative_to(cnmc_dir / "training_data")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)
    return root


def fake_pdf(path: Path, draft) -> None:
    """Stands in for the Qt renderer: the engine places and hashes what the caller draws."""
    path.write_bytes(b"%PDF-1.4 stand-in\n" + f"{draft.case.key} {draft.signer} {draft.digest}".encode())


def open_folder(root: Path):
    project = open_dataset(root)
    cells = [(c.path, c.patient) for c in project.scan.cells]
    return project, project.store, cells


# ------------------------------------------------------------------------------------- cases
def test_a_cnmc_folders_cases_are_its_patients(folder):
    project, store, cells = open_folder(folder)
    try:
        cases = list_cases(cells)
        assert [c.title for c in cases] == ["patient 1", "patient 67", "patient 68", "patient 78", "patient H3",
                                            "patient H6", "patient H48"]
        p1 = resolve_case("1", cells, folder)
        assert p1.key == "patient:1" and list(p1.paths) == P1
        assert resolve_case("h6", cells).key == "patient:H6"  # C-NMC writes h3 and H3 alike
        whole = resolve_case(".", cells)
        assert whole.key == "folder:" and len(whole.paths) == 15 and whole.title == "the whole folder"
        sub = resolve_case("fold_0/hem", cells, folder)
        assert sub.key == "folder:fold_0/hem" and len(sub.paths) == 7
        with pytest.raises(ValueError, match="no case of this folder .*patients here: 1, 67"):
            resolve_case("99", cells)
    finally:
        store.close()


def test_without_patient_ids_the_case_is_the_folder(pbc_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "pbc"
    for c in ("basophil", "neutrophil"):
        (root / c).mkdir(parents=True)
        for f in sorted((pbc_dir / c).iterdir())[:3]:
            (root / c / f.name).symlink_to(f)
    project, store, cells = open_folder(root)
    try:
        assert [(c.key, len(c.paths)) for c in list_cases(cells)] == [("folder:", 6)]
        assert resolve_case("basophil", cells, root).key == "folder:basophil"
    finally:
        store.close()


# ------------------------------------------------------------------------------------- review + sign
def test_signing_is_refused_while_a_cell_is_unreviewed_and_succeeds_after(folder):
    project, store, cells = open_folder(folder)
    try:
        case = resolve_case("1", cells)
        with pytest.raises(SignOffRefused) as refused:
            sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        assert "5 cell(s) not reviewed" in str(refused.value)
        assert [m.strip() for m in refused.value.missing[1:]] == P1  # each cell named
        # Viewing counts for nothing; setting a class, confirming, or unsure with a note does.
        store.set_label(P1[0], "hem", annotator="Dr. A")
        store.set_label(P1[0], "all", annotator="Dr. A")
        reviews.confirm(store, P1[1:3], annotator="Dr. A")
        store.set_label(P1[3], UNSURE, annotator="Dr. A")
        with pytest.raises(ValueError, match="unsure: it counts as reviewed with a note"):
            reviews.confirm(store, [P1[3]], annotator="Dr. A")
        kinds = snapshot(store, None).kinds
        assert (kinds[P1[0]], kinds[P1[1]], kinds[P1[3]], kinds[P1[4]]) == (SET, CONFIRMED, None, None)
        with pytest.raises(SignOffRefused) as refused:
            sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        assert "2 cell(s) not reviewed" in str(refused.value) and P1[3] in "\n".join(refused.value.missing)
        reviews.confirm(store, [P1[3]], annotator="Dr. A", note="smudged nucleus")
        reviews.confirm(store, [P1[4]], annotator="Dr. A")
        assert not list(store.data_root.glob(".allblast/signed/*"))  # refusals wrote nothing
        sig = sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        labels = {p: ("unsure" if p == P1[3] else "all") for p in P1}
        assert sig.digest == label_digest(labels.items()) == hashlib.sha256("".join(
            json.dumps([p, labels[p]]) + "\n" for p in sorted(P1)).encode()).hexdigest()
        pdf = store.db_path.parent / sig.report
        assert pdf == folder / ".allblast" / "signed" / "patient-1-v1.pdf"
        assert sig.report_sha256 == hashlib.sha256(pdf.read_bytes()).hexdigest()
        record = json.loads(pdf.with_suffix(".json").read_text())
        assert record["digest"] == sig.digest and record["signer"] == "Dr. A" and record["cells"] == 5
        assert verify_case(store, case.key, case.paths).state == INTACT
        with pytest.raises(SignOffRefused, match="signed already"):
            sign(store, case, signer="Dr. B", model=None, write_report=fake_pdf)
    finally:
        store.close()


def _model(store, predicted: dict[str, str]) -> ModelView:
    """A model's stored answers (the store keeps probabilities; the view is its top class)."""
    from engine.labels import predictions as P

    record = P.ModelRecord("ab" * 32, "/runs/x/model.pt", "x", ("all", "hem"), 1.0, False, "2024-01-01T00:00:00")
    P.begin(store, record)
    probs = np.array([[0.9, 0.1] if predicted[p] == "all" else [0.2, 0.8] for p in predicted], np.float32)
    P.add(store, record.sha256, list(predicted), probs)
    from engine.cases.review import model_view

    return model_view(P.load(store, record.sha256))


def test_an_open_disagreement_refuses_until_accepted_relabelled_or_kept_with_a_reason(folder):
    project, store, cells = open_folder(folder)
    try:
        case = resolve_case("1", cells)
        reviews.confirm(store, P1, annotator="Dr. A")
        model = _model(store, {P1[0]: "hem", P1[1]: "hem", P1[2]: "all", P1[3]: "all", P1[4]: "all"})
        with pytest.raises(SignOffRefused) as refused:
            sign(store, case, signer="Dr. A", model=model, write_report=fake_pdf)
        assert "2 open disagreement(s)" in str(refused.value)
        assert f"  {P1[0]}: expert all, model hem" in refused.value.missing
        # accept the model's class for one ("accepted" counts as reviewed), keep the other with a reason
        store.set_label(P1[0], "hem", annotator="Dr. A", source="accepted prediction (model abababab)")
        with pytest.raises(ValueError, match="needs a reason"):
            reviews.keep(store, P1[1], model=model.sha256, predicted="hem", reason="  ")
        reviews.keep(store, P1[1], model=model.sha256, predicted="hem", reason="nucleoli visible")
        snap = snapshot(store, model)
        assert snap.kinds[P1[0]] == "accepted" and not snap.open_disagreement(P1[1]) and snap.disagrees(P1[1])
        sig = sign(store, case, signer="Dr. A", model=model, write_report=fake_pdf)
        assert sig.model == "ab" * 32
    finally:
        store.close()


def test_an_amendment_after_signing_is_recorded_shown_and_needs_a_new_signature(folder):
    project, store, cells = open_folder(folder)
    try:
        case = resolve_case("1", cells)
        reviews.confirm(store, P1, annotator="Dr. A")
        first = sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        v1 = (store.db_path.parent / first.report).read_bytes()
        with pytest.raises(ReasonRequired, match="signed case 'patient 1'.*needs a reason"):
            store.set_label(P1[2], "hem", annotator="Dr. B")
        assert store.state(P1[2]).current == "all"  # nothing changed
        store.set_label(P1[2], "hem", annotator="Dr. B", reason="second look: normal lymphocyte")
        [a] = amendments(store, case.key)
        assert (a.path, a.old, a.new, a.reason, a.annotator) == (P1[2], "all", "hem",
                                                                 "second look: normal lymphocyte", "Dr. B")
        verdict = verify_case(store, case.key, case.paths)
        assert verdict.state == AMENDED and any("second look" in line for line in verdict.lines())
        rows = {s.title: s for s in summarize(store, list(project.classes), model=None, positive="all")}
        assert rows["patient 1"].status == "amended" and rows["patient H6"].status == "open"
        assert "amended" in format_table(list(rows.values()), "all")
        with pytest.raises(ReasonRequired):  # an undo changes the signed labels too
            store.undo()
        # a new signature: the report is a new version beside the first, which stays as it was
        second = sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        assert second.round == 2 and second.report == "signed/patient-1-v2.pdf"
        assert (store.db_path.parent / first.report).read_bytes() == v1
        assert verify_case(store, case.key, case.paths).state == INTACT
        # the history export lists the confirmations, the amendment and both sign-offs
        out = store.data_root.parent / "history.csv"
        export_csv(store, out, history=True)
        text = out.read_text()
        assert "amendment" in text and "second look: normal lymphocyte" in text
        assert text.count("sign-off") == 2 and "confirm" in text
    finally:
        store.close()


def test_the_two_person_rule_needs_another_persons_signature(folder):
    project, store, cells = open_folder(folder)
    try:
        case = resolve_case("H6", cells)
        reviews.confirm(store, case.paths, annotator="Dr. A")
        set_two_person(store, True)
        one = sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        assert (one.seq, one.required) == (1, 2)
        rows = {s.title: s for s in summarize(store, list(project.classes), model=None, positive="all")}
        assert rows["patient H6"].status == "awaiting 2nd signature"
        with pytest.raises(SignOffRefused, match="another person"):
            sign(store, case, signer="dr. a", model=None, write_report=fake_pdf)
        two = sign(store, case, signer="Dr. B", model=None, write_report=fake_pdf)
        assert (two.seq, two.round, two.digest) == (2, 1, one.digest) and two.report.endswith("-signature2.pdf")
        verdict = verify_case(store, case.key, case.paths)
        assert verdict.state == INTACT and verdict.complete
    finally:
        store.close()


# ------------------------------------------------------------------------------------- tampering
def test_verify_says_tampered_for_a_label_row_edited_in_sqlite(folder):
    project, store, cells = open_folder(folder)
    case = resolve_case("1", cells)
    reviews.confirm(store, P1, annotator="Dr. A")
    sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
    db = store.db_path
    store.close()
    conn = sqlite3.connect(db)  # outside allblast: no history row, no amendment
    with conn:
        conn.execute("INSERT OR REPLACE INTO labels(path, label, annotator, changed_at) VALUES (?, 'hem', 'x', "
                     "'2020-01-01T00:00:00')", (P1[4],))
    conn.close()
    with LabelStore.open(folder) as store:
        verdict = verify_case(store, case.key, case.paths)
    assert verdict.state == TAMPERED
    assert any(P1[4] in p and "no amendment recorded" in p for p in verdict.problems)


def test_verify_says_tampered_for_a_flipped_byte_of_the_signed_report(folder):
    project, store, cells = open_folder(folder)
    try:
        case = resolve_case("H6", cells)
        reviews.confirm(store, case.paths, annotator="Dr. A")
        sig = sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
        pdf = store.db_path.parent / sig.report
        data = bytearray(pdf.read_bytes())
        data[len(data) // 2] ^= 0x01
        pdf.write_bytes(bytes(data))
        verdict = verify_case(store, case.key, case.paths)
        assert verdict.state == TAMPERED and any("changed after it was signed" in p for p in verdict.problems)
        with pytest.raises(SignOffRefused, match="changed outside allblast"):
            store.set_label(case.paths[0], "all", annotator="Dr. A", reason="x")
            sign(store, case, signer="Dr. A", model=None, write_report=fake_pdf)
    finally:
        store.close()


# ------------------------------------------------------------------------------------- report numbers
def test_the_case_report_states_the_count_the_interval_and_warns_below_100_cells():
    cells = [CaseCell(f"c{i}.png", "7", "hem", "all" if i < 10 else "hem") for i in range(50)]
    cells.append(CaseCell("u.png", "7", "hem", UNSURE))
    report = build_case_report(cells, ["hem", "all"], data_root="/d", positive="all")
    assert [c.name for c in report.counts] == ["hem", "all"]  # the class set's order, not the alphabet's
    assert report.labelled == 50 and (report.counted.k, report.counted.n) == (10, 50)
    assert report.ci_line == "all: 10 of 50 cells counted, 20.0% (95% confidence interval 11.2%–33.0%, Wilson)"
    assert "fewer than 100" in report.few_cells
    many = [CaseCell(f"c{i}.png", "7", "hem", "hem") for i in range(100)]
    assert build_case_report(many, ["hem", "all"], data_root="/d", positive="all").few_cells == ""


# ------------------------------------------------------------------------------------- the database
def test_a_database_of_the_previous_version_is_migrated_and_keeps_its_labels(tmp_path):
    from engine.labels import schema

    root = tmp_path / "data"
    root.mkdir()
    db = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(db)  # exactly what allblast wrote at schema 3
    for script in (schema._SCHEMA, schema._SCHEMA_V2, schema._SCHEMA_V3):
        conn.executescript(script)
    conn.executescript(
        "INSERT INTO meta(key, value) VALUES ('created_at', '2024-01-01T00:00:00');"
        "INSERT INTO cells(path, original, patient, label_source, present, first_seen, last_seen) "
        "VALUES ('c1.png', 'all', '1', 'folder', 1, 't', 't');"
        "INSERT INTO actions(kind, state, annotator, created_at, n) VALUES ('keyboard', 'done', 'Dr. A', 't', 1);"
        "INSERT INTO changes(action_id, path, old, new, annotator, changed_at, source, prev_set) "
        "VALUES (1, 'c1.png', 'all', 'hem', 'Dr. A', 't', 'keyboard', 0);"
        "INSERT INTO labels(path, label, annotator, changed_at) VALUES ('c1.png', 'hem', 'Dr. A', 't');"
        "PRAGMA user_version = 3;")
    conn.close()
    with LabelStore.open(root, db_path=db) as store:
        assert store.query("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 4
        assert store.state("c1.png").current == "hem" and store.history("c1.png")[0].annotator == "Dr. A"
        assert signatures(store) == [] and snapshot(store, None).kinds == {"c1.png": SET}
        reviews.confirm(store, ["c1.png"], annotator="Dr. B")


# ------------------------------------------------------------------------------------- the CLI
def _engine(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "engine.cli", "-q", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_cli_confirms_signs_with_a_real_pdf_lists_amends_and_verifies(folder, capsys):
    from engine.cli import main
    from gui.pdftools import pdf_text

    d = str(folder)
    assert main(["-q", "cases", "sign", d, "1", "--annotator", "Dr. A"]) == 2
    err = capsys.readouterr().err
    assert "cannot sign patient 1: 5 cell(s) not reviewed" in err and P1[0] in err and "Traceback" not in err
    for p in P1:  # the label the cell has already: a confirmation
        assert main(["-q", "labels", "set", d, p, "all", "--annotator", "Dr. A"]) == 0
    assert "confirmed" in capsys.readouterr().out
    proc = _engine("cases", "sign", d, "1", "--annotator", "Dr. A")  # draws the PDF with Qt, offscreen
    assert proc.returncode == 0, proc.stderr
    assert "patient 1: signed by Dr. A" in proc.stdout
    pdf = folder / ".allblast" / "signed" / "patient-1-v1.pdf"
    text = " ".join(pdf_text(pdf)).replace("\ufb01", "fi").replace("\ufb00", "ff")  # Qt writes ligatures
    with LabelStore.open(folder) as store:
        [sig] = signatures(store)
    flat = "".join(text.split()).replace("(sha256)", "")  # the table may wrap the digest
    assert "Signed by Dr. A" in text and sig.digest in flat
    assert "Only 5 cells were counted" in text and "95% confidence interval" in text

    assert main(["-q", "cases", "list", d]) == 0
    out = capsys.readouterr().out
    table = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "signed" in table["patient 1"] and "100.0% (56.6%–100.0%), n=5" in table["patient 1"]
    assert table["patient H6"].rstrip().endswith("open")

    assert main(["-q", "labels", "set", d, P1[0], "hem", "--annotator", "Dr. B"]) == 2
    err = capsys.readouterr().err
    assert "needs a reason" in err and "--reason" in err and len(err.strip().splitlines()) == 1
    assert main(["-q", "labels", "set", d, P1[0], "hem", "--annotator", "Dr. B", "--reason", "re-read"]) == 0
    capsys.readouterr()
    assert main(["-q", "cases", "verify", d]) == 0
    out = capsys.readouterr().out
    assert "patient 1: amended" in out and "re-read" in out

    pdf.write_bytes(pdf.read_bytes()[:-1] + bytes([pdf.read_bytes()[-1] ^ 0x20]))
    assert main(["-q", "cases", "verify", d, "1"]) == 3
    assert "patient 1: tampered" in capsys.readouterr().out
