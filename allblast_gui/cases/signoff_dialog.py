"""Sign Off… (Ctrl+Shift+S): one case, what it rests on, what is still missing, and the signer.

The Sign button stays off while cells are unreviewed or disagreements are open; the list says
which. Signing runs on the feature's worker (the PDF is drawn there); the dialog then shows where
the signed report went, its sha256 and the labels' digest."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QVBoxLayout,
)

from engine.cases.summary import AMENDED_STATUS, AWAITING, READY, CaseSummary


class SignOffDialog(QDialog):
    signRequested = Signal(str, str)  # case key, signer

    def __init__(self, summaries: list[CaseSummary], chosen: str | None, signer: str, *, two_person: bool,
                 model_text: str, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("signOffDialog")
        self.setWindowTitle("Sign Off Case")
        self.setMinimumWidth(560)
        self.summaries = {s.key: s for s in summaries}
        self.case = QComboBox(objectName="signOffCase")
        for s in summaries:
            self.case.addItem(f"{s.title}  ({s.status})", s.key)
        self.signer = QLineEdit(signer, objectName="signOffSigner")
        self.signer.setPlaceholderText("your name, as it goes on the report")
        self.facts = QLabel(objectName="signOffFacts")
        self.facts.setTextFormat(Qt.TextFormat.PlainText)
        self.facts.setWordWrap(True)
        self.missing = QPlainTextEdit(objectName="signOffMissing")
        self.missing.setReadOnly(True)
        self.missing.setMaximumHeight(150)
        self.result = QLabel(objectName="signOffResult")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        note = QLabel("Signing records your name, the time, a sha256 digest of the case's cells and their labels "
                      "and the active model's sha256, and writes the case report (PDF) with your signature block "
                      "into signed/ beside the label database. A label changed afterwards is an amendment "
                      "(with a reason) and needs a new signature."
                      + ("\nTwo-person rule: a second signature by another person completes it." if two_person
                         else ""))
        note.setWordWrap(True)
        note.setStyleSheet("color: #555555")
        form = QFormLayout()
        form.addRow("Case", self.case)
        form.addRow("Model", QLabel(model_text))
        form.addRow("", self.facts)
        form.addRow("Signed by", self.signer)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.sign_button = QPushButton("Sign", objectName="signOffSign")
        self.sign_button.setDefault(True)
        self.buttons.addButton(self.sign_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button = QPushButton("Open Report", objectName="signOffOpen")
        self.open_button.setVisible(False)
        self.buttons.addButton(self.open_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.rejected.connect(self.reject)
        self.sign_button.clicked.connect(self._sign)
        self.open_button.clicked.connect(self._open)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Before it can be signed:"))
        layout.addWidget(self.missing)
        layout.addWidget(self.result)
        layout.addWidget(note)
        layout.addWidget(self.buttons)
        self.report: Path | None = None
        self.case.currentIndexChanged.connect(lambda _i: self._show())
        self.signer.textChanged.connect(lambda _t: self._show())
        if chosen is not None and (i := self.case.findData(chosen)) >= 0:
            self.case.setCurrentIndex(i)
        self._show()

    def chosen(self) -> CaseSummary | None:
        return self.summaries.get(self.case.currentData())

    def set_summaries(self, summaries: list[CaseSummary]) -> None:
        """The cases again (after a review mark or a signature): the same case stays chosen."""
        self.summaries = {s.key: s for s in summaries}
        for i in range(self.case.count()):
            s = self.summaries.get(self.case.itemData(i))
            if s is not None:
                self.case.setItemText(i, f"{s.title}  ({s.status})")
        self._show()

    def _show(self) -> None:
        s = self.chosen()
        if s is None:
            self.facts.setText("No case")
            self.sign_button.setEnabled(False)
            return
        lines = [f"{s.cells} cells, {s.reviewed} reviewed, {s.open_disagreements} open disagreement(s)",
                 f"Differential: {s.differential_text()}"]
        if s.positive:
            lines.append(f"{s.positive}: {s.fraction.text() if s.fraction else '–'}")
            if s.fraction is not None and s.fraction.too_few:
                lines.append(f"Only {s.fraction.n} cells counted (fewer than 100): the report says so.")
        lines.append(f"Status: {s.status}")
        self.facts.setText("\n".join(lines))
        missing = s.readiness.missing()
        if s.status == AMENDED_STATUS:
            missing = missing + [f"amended since it was signed: {a.path} {a.old} -> {a.new} ({a.reason})"
                                 for a in s.verdict.amendments[:10]]
        self.missing.setPlainText("\n".join(missing) if missing else
                                  "Nothing: every cell is reviewed and no disagreement is open.")
        can = s.status in (READY, AMENDED_STATUS, AWAITING) and s.readiness.ready
        self.sign_button.setEnabled(can and bool(self.signer.text().strip()))
        self.sign_button.setText("Sign (second signature)" if s.status == AWAITING else "Sign")

    def _sign(self) -> None:
        s = self.chosen()
        if s is not None and self.signer.text().strip():
            self.sign_button.setEnabled(False)
            self.result.setText("Signing… (writing the report)")
            self.signRequested.emit(s.key, self.signer.text().strip())

    def signed(self, signature, report: Path) -> None:
        self.report = report
        self.result.setText(f"Signed by {signature.signer} at {signature.when}.\nReport: {report}\n"
                            f"Report sha256: {signature.report_sha256}\nLabels digest: {signature.digest}")
        self.open_button.setVisible(True)

    def refused(self, headline: str, missing: list[str]) -> None:
        self._show()
        self.result.setText(f"Not signed: {headline}")
        if missing:
            self.missing.setPlainText("\n".join(missing))

    def _open(self) -> None:
        if self.report is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.report)))
