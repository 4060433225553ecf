"""Sub-commands of ``radiopath``; each module registers its command on :data:`radiopath.cli.main`."""

from radiopath.commands import benchmark, demo  # noqa: F401
from radiopath.commands import graphs  # noqa: F401
from radiopath.commands import extract  # noqa: F401
from radiopath.commands import train  # noqa: F401
from radiopath.commands import evaluate  # noqa: F401
