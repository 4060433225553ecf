"""The ``radiopath`` command line: a thin layer over the Python API.

Each command validates its input before any long work starts and exits with status 2 and
a message naming the file, patient or field when the input is wrong.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from radiopath import __version__
from radiopath.errors import RadiopathInputError
from radiopath.executors import ExecutorError

log = logging.getLogger("radiopath")


def friendly_errors(func):
    """Turn input errors into a one-line message and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RadiopathInputError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (OSError, ExecutorError) as exc:  # a full disk, a lost mount, a lost cluster
            click.echo(
                f"error: {exc}\nWhat finished is kept: run the same command again to resume.",
                err=True,
            )
            sys.exit(1)

    return wrapper


def executor_options(func):
    """``--executor local|ray`` and ``--address`` for a command whose stage fans out."""
    func = click.option(
        "--address",
        default=None,
        help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (implies --executor "
        "ray; default: RAY_ADDRESS, else a Ray instance on this machine).",
    )(func)
    return click.option(
        "--executor",
        "executor_name",
        type=click.Choice(["local", "ray"]),
        default=None,
        help="Where the units run: local (this process, the default) or ray.",
    )(func)


def executor_setting(name: str | None, address: str | None) -> dict | None:
    """The ``executor`` setting the flags ask for (None: the configuration's, or local)."""
    if name is None and address is None:
        return None
    return {"name": name or "ray", "address": address}


def parse_list(value: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="radiopath")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """radiopath: spatial radiopathomics with graph neural networks.

    Patch embeddings of whole-slide images and CT scans -> spatial graphs -> SPARRA,
    ABMIL or mean aggregation -> downstream survival models and metrics.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("radiopath").setLevel(level)


# Commands live beside the stage they drive; importing registers them on ``main``.
from radiopath import commands  # noqa: E402,F401
