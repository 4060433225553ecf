"""radiopath/__init__.py: importing radiopath leaves the matplotlib backend alone."""

from __future__ import annotations

import os
import subprocess
import sys

from config_checks import ROOT


def test_importing_radiopath_keeps_the_matplotlib_backend():
    code = (
        "import matplotlib; before = matplotlib.get_backend(); "
        "import radiopath.report, radiopath.sweep, radiopath.viz.importance, radiopath.benchmark; "
        "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
