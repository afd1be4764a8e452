"""Reports to files: figures drawn here, content and layout from engine.report, written as one
self-contained HTML file or an A4 PDF (Qt's own QTextDocument + QPdfWriter: no browser, no LaTeX).

Safe on a worker thread (QImage painting and QTextDocument printing need no widgets). The CLI
calls `ensure_gui_application` first: an offscreen QGuiApplication gives Qt its fonts.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from PySide6.QtCore import QMarginsF, QUrl
from PySide6.QtGui import QGuiApplication, QPageLayout, QPageSize, QPdfWriter, QTextDocument

from engine.labels.outputs import check_output as guard
from engine.report.case import CaseReport
from engine.report.html import data_uri, render_html
from engine.report.model_report import ModelReport
from engine.utils.files import atomic_path, atomic_write_text

from .figures import EXTRA, TRAIN, VAL, bar_chart, confusion_figure, line_chart, montage, png_bytes

log = logging.getLogger(__name__)
FORMATS = (".pdf", ".html")
_app = None  # the CLI's offscreen application, kept alive for the process


def ensure_gui_application() -> None:
    """Qt needs an application object for fonts; the CLI has none, and may have no display."""
    global _app
    if QGuiApplication.instance() is None:
        _app = QGuiApplication(["allblast-engine", "-platform", "offscreen"])


def check_output(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path.name}: a report is written as .pdf or .html; choose one of those names")
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name ending in .pdf or .html")
    guard(path, force=True, what="report")  # never into .allblast/; an existing file: the caller asked
    return path


def case_figures(report: CaseReport) -> dict:
    figures = {}
    if report.labelled or report.predicted:
        groups = [("expert", [c.expert_pct for c in report.counts], TRAIN)]
        if report.predicted:
            groups.append(("model", [c.model_pct for c in report.counts], VAL))
        figures["differential"] = bar_chart([c.name for c in report.counts], groups, title="Differential (share of cells)")
    for k, name in enumerate(report.classes):
        if report.montage.get(name):
            figures[f"montage_{k}"] = montage(Path(report.data_root), report.montage[name])
    return figures


def model_figures(report: ModelReport) -> dict:
    c = report.curves
    figures = {
        "loss": line_chart("Loss", c.epochs, [("train", c.train_loss, TRAIN), ("validation", c.val_loss, VAL)],
                           best_epoch=c.best_epoch, marks=c.halvings),
        "accuracy": line_chart("Accuracy and weighted F1", c.epochs,
                               [("train accuracy", c.train_accuracy, TRAIN), ("validation accuracy", c.val_accuracy, VAL),
                                ("validation weighted F1", c.val_weighted_f1, EXTRA)],
                               best_epoch=c.best_epoch, marks=c.halvings),
    }
    if report.evaluation is not None:
        figures["confusion"] = confusion_figure(report.evaluation.metrics["confusion_matrix"], report.classes)
    return figures


def write_report(path: str | os.PathLike, report: CaseReport | ModelReport) -> Path:
    """Write `report` to `path` (.pdf or .html), atomically; returns the path."""
    path = check_output(path)
    template = "case_report.html" if isinstance(report, CaseReport) else "model_report.html"
    figures = case_figures(report) if isinstance(report, CaseReport) else model_figures(report)
    if path.suffix.lower() == ".html":
        images = {name: data_uri(png_bytes(image)) for name, image in figures.items()}
        atomic_write_text(path, render_html(template, report, images))
    else:
        _write_pdf(path, render_html(template, report, {name: f"figure:{name}" for name in figures}, for_print=True),
                   figures, title=report.title)
    log.info("wrote %s (%s)", path, template)
    return path


def _write_pdf(path: Path, html: str, figures: dict, *, title: str) -> None:
    doc = QTextDocument()
    for name, image in figures.items():
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"figure:{name}"), image)
    doc.setHtml(html)
    doc.setMetaInformation(QTextDocument.MetaInformation.DocumentTitle, title)
    with atomic_path(path) as tmp:
        writer = QPdfWriter(str(tmp))
        writer.setTitle(title)
        writer.setCreator("allblast")
        writer.setResolution(300)
        writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                         QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter))
        doc.print_(writer)  # paginates, with page numbers
        del writer  # finishes and closes the file before it is moved into place
