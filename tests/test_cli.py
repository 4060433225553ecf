"""radiopath/cli.py: the command group. (Tests that drive one command through the CLI sit
with the module that command runs.)"""

from __future__ import annotations

import re

from click.testing import CliRunner

from radiopath.cli import main


def test_cli_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in (
        "demo",
        "benchmark",
        "extract",
        "graphs",
        "train",
        "evaluate",
        "report",
        "importance",
        "sweep",
    ):
        assert re.search(rf"^\s+{command}\s", result.output, re.M), command
