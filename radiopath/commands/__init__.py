"""Sub-commands of ``radiopath``; each module registers its command on :data:`radiopath.cli.main`."""

from radiopath.commands import (  # noqa: F401
    benchmark,
    demo,
    evaluate,
    extract,
    graphs,
    train,
)
