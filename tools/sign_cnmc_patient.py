"""Sign a C-NMC patient in the window: review (confirm) its cells, sign it, then show the Cases dock.

    # a folder of our own (the label store is written beside the images), linked to the samples:
    mkdir -p /tmp/cnmc && cp -rs "$PWD/../shared/data/cnmc-samples/training_data/." /tmp/cnmc/
    xvfb-run -s "-screen 0 1400x900x24" .venv/bin/allblast /tmp/cnmc --annotator "Dr. A. Example" \
        --script tools/sign_cnmc_patient.py --exit-after

It prints where the signed report went; the screenshot of the window (the Cases dock in front) is
written to $ALLBLAST_SHOT (default: cases-window.png in the current folder). docs/gui.md shows both.
"""
import os
from pathlib import Path

from PySide6.QtWidgets import QApplication

w = app.window  # noqa: F821 - `app` is given by `allblast --script`
signer = w.session.annotator or "Dr. A. Example"

# Patient 1: every cell reviewed with the confirm key (Y), then signed.
case = app.show_case("1")
print(f"{case['title']}: {case['cells']} cells, {case['reviewed']} reviewed, status {case['status']}")
try:
    app.sign_off("1", annotator=signer)
except Exception as exc:  # refused: the cells are not reviewed yet
    print(f"refused, as it should be: {str(exc).splitlines()[0]}")
app.confirm(case["paths"])
report = app.sign_off("1", annotator=signer)
print(f"signed: {report}")

# A few more states for the panel: patient H6 reviewed (ready), patient 68 signed and then amended.
app.confirm(app.show_case("H6")["paths"])
p68 = app.show_case("68")
app.confirm(p68["paths"])
app.sign_off("68", annotator=signer)
app.set_label(p68["paths"][:1], "hem", reason="second look: a reactive lymphocyte, not a blast")

app.show_case("1")
w.show_dock("cases")
w.cases.panel.select("patient:1")
w.grid.select_path(case["paths"][0])
for _ in range(20):
    QApplication.processEvents()
for row in app.cases():
    print(f"  {row['title']:<12} {row['reviewed']}/{row['cells']} reviewed  {row['status']}")
print("verify:", app.verify())
shot = app.screenshot(Path(os.environ.get("ALLBLAST_SHOT", "cases-window.png")))
print(f"screenshot: {shot}")
