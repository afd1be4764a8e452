"""Reading the PDFs the tests write: text lines (poppler's pdftotext when installed, else pypdf)
and page / embedded-image counts (pypdf)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def pdf_text(path: Path) -> list[str]:
    """The PDF's lines, whitespace collapsed: poppler's pdftotext when installed, else pypdf."""
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                              check=True).stdout
    else:
        from pypdf import PdfReader

        text = "\n".join(p.extract_text(extraction_mode="layout") for p in PdfReader(path).pages)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def pdf_pages_and_images(path: Path) -> tuple[int, int]:
    from pypdf import PdfReader

    reader = PdfReader(path)
    return len(reader.pages), sum(len(page.images) for page in reader.pages)
