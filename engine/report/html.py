"""Reports as HTML from the packaged Jinja2 templates (resources/templates/), escaped throughout.

The same HTML becomes the self-contained .html file (figures inline as data: URIs) and, through
Qt's rich-text engine on the GUI side, the PDF. Autoescaping is on for every template: a file or
annotator name is text, never markup.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

import jinja2

from .. import __version__

TEMPLATE_PACKAGE = "allblast_resources"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    root = resources.files(TEMPLATE_PACKAGE) / "templates"
    env = jinja2.Environment(loader=jinja2.FunctionLoader(lambda name: (root / name).read_text(encoding="utf-8")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{v:.{digits}%}"
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    env.globals["version"] = __version__
    env.filters["basename"] = lambda p: str(p).rpartition("/")[2]
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(template: str, report, images: Mapping[str, str], *, for_print: bool = False) -> str:
    """The report as HTML. `images` maps figure names to <img> sources (data: URIs for a file;
    resource names for Qt's document). `for_print` leaves out what only a browser understands."""
    return environment().get_template(template).render(r=report, img=images, for_print=for_print)


__all__ = ["render_html", "data_uri", "environment"]
