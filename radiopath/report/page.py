"""Rendering a report page: the Jinja2 templates shipped in ``radiopath/report/templates``
and figures embedded as data URIs, so one HTML file opens from disk with no network."""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
from PIL import Image

from radiopath.report.gallery import data_uri
from radiopath.runkit import write_text

MAX_FIGURE_WIDTH = 1600  # pixels; wider figures are shrunk before embedding
PALETTE_OVER = 150_000  # bytes; a larger PNG figure is embedded with a 256-colour palette


@dataclass
class Figure:
    """A figure of the page: its PNG on disk (linked) and the embedded image."""

    title: str
    path: str
    src: str
    caption: str = ""


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment (templates read from the installed package)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("radiopath.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["seconds"] = _seconds
    return env


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _seconds(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def embed_png(path: Path) -> str:
    """A PNG figure as a data URI, shrunk to :data:`MAX_FIGURE_WIDTH` and, when large,
    reduced to a 256-colour palette (plots have few colours; the file on disk is kept)."""
    data = path.read_bytes()
    if len(data) <= PALETTE_OVER:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width <= MAX_FIGURE_WIDTH:
                return data_uri(data)
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if image.width > MAX_FIGURE_WIDTH:
            height = round(image.height * MAX_FIGURE_WIDTH / image.width)
            image = image.resize((MAX_FIGURE_WIDTH, height), Image.Resampling.LANCZOS)
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue())


def figure(path: Path, base: Path, title: str, caption: str = "") -> Figure:
    """A :class:`Figure` of a PNG, linked relative to the page's folder ``base``."""
    return Figure(title, Path(os.path.relpath(path, base)).as_posix(), embed_png(path), caption)


def render(template: str, out: Path, **context) -> Path:
    """Render ``template`` with ``context`` and write it atomically to ``out``."""
    page = environment().get_template(template).render(**context)
    return write_text(out, page)
