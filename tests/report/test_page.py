"""The page's templates ship with the package, and embedded figures stay small."""

from __future__ import annotations

import base64
import configparser
import fnmatch
import io
from pathlib import Path

import numpy as np
from PIL import Image

import radiopath
from radiopath.report.page import MAX_FIGURE_WIDTH, embed_png, environment

ROOT = Path(radiopath.__file__).resolve().parents[1]


def test_every_template_file_is_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["radiopath.report"].split(",")]
    folder = ROOT / "radiopath" / "report"
    files = [p.relative_to(folder).as_posix() for p in (folder / "templates").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files)
    for name in ("report.html.j2", "compare.html.j2"):
        environment().get_template(name)  # loads through the package, not a path


def test_a_large_figure_is_shrunk_and_paletted_for_the_page(tmp_path):
    rng = np.random.default_rng(0)
    noisy = (rng.random((400, 2400, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noisy).save(path)
    uri = embed_png(path)
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.width == MAX_FIGURE_WIDTH and image.mode == "P"
    small = tmp_path / "small.png"
    Image.fromarray(noisy[:50, :50]).save(small)
    assert embed_png(small).endswith(base64.b64encode(small.read_bytes()).decode())
