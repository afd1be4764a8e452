"""The `allblast-engine` command line as other tools call it: scan, help, errors."""
from __future__ import annotations

import json
import subprocess
import sys

from engine.cli import main


def test_scan_json_on_cnmc(cnmc_dir, tmp_path, capsys):
    out = tmp_path / "scan.json"
    assert main(["-q", "scan", str(cnmc_dir), "--labels",
                 str(cnmc_dir / "validation_data/C-NMC_test_prelim_phase_data_labels.csv"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cells"] == 17
    assert data["classes"] == {"all": 9, "hem": 8}
    assert set(data["patients"]) == {"1", "67", "68", "78", "H6", "H48", "H3", "H49", "57"}
    assert data["problems"] == []
    assert len(data["missing"]) == 1865
    assert "17 cells" in capsys.readouterr().out


def test_scan_reports_problems_in_json(tmp_path):
    data_dir = tmp_path / "d"
    (data_dir / "a").mkdir(parents=True)
    (data_dir / "a" / "empty.png").write_bytes(b"")
    out = tmp_path / "s.json"
    assert main(["-q", "scan", str(data_dir), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cells"] == 0
    assert data["problems"] == [{"path": "a/empty.png", "reason": "empty file (0 bytes)"}]


def test_missing_folder_and_bad_csv_are_clear_errors(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n")
    assert main(["scan", str(tmp_path), "--labels", str(bad)]) == 2
    assert "expected the C-NMC form" in capsys.readouterr().err


def test_help_explains_every_command():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for word in ("scan", "train", "predict", "evaluate", "labels"):
        assert word in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    for flag in ("--val", "--split", "--backbone", "--weights", "--no-pretrained", "--img-size", "--epochs",
                 "--batch-size", "--ask-every", "--device", "--workers", "--seed", "--resume"):
        assert flag in proc.stdout
    assert "LEAKY" in proc.stdout
