"""``python -m radiopath``: the command line (same as the ``radiopath`` script)."""

from radiopath.cli import main

main()
