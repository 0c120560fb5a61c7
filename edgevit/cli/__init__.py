"""``edgevit`` command line: each verb reads and writes files in a run directory.

edgevit run recipes/quickstart.yaml --out runs/quickstart     # train -> quantize -> export -> parity
edgevit train RECIPE --out RUN ; edgevit export RUN ; edgevit parity RUN   (quantize RUN: int8 targets only)
edgevit export --model vit_tiny_patch16 --backend executorch --out vit.pte   # one artifact, scriptable
edgevit models 'vit_*'
"""

from __future__ import annotations

import sys

import typer

from edgevit.cli import pipeline, tools  # noqa: F401 -- each registers its commands on the app
from edgevit.cli.app import _echo, app
from edgevit.utils import EdgeVitError


def _cli_error_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """``(usage errors, aborts)`` of the CLI library in use: typer >= 0.29 vendors click (``typer._click``), whose
    exceptions derive from ``typer.TyperException``; older typer raises the ``click`` package's. Both are handled,
    so a usage error is click's one-line message, never a traceback, whichever is installed."""
    usage: list[type] = [t for t in (getattr(typer, "TyperException", None),) if t]
    aborts: list[type] = [typer.Abort]
    try:
        import click  # noqa: PLC0415 -- optional: typer >= 0.29 no longer needs it

        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(aborts)


_INTERRUPTED = "interrupted; completed checkpoints and artifacts are intact (training resumes with --resume)"


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors and a non-zero exit for bad input, never a traceback."""
    usage, aborts = _cli_error_types()
    try:
        rc = app(args=argv, standalone_mode=False)
    except usage as e:
        e.show()
        sys.exit(getattr(e, "exit_code", 2))
    except aborts:  # Ctrl-C inside the command: the CLI library turns KeyboardInterrupt into Abort
        _echo(_INTERRUPTED)
        sys.exit(130)
    except KeyboardInterrupt:
        _echo(_INTERRUPTED)
        sys.exit(130)
    except EdgeVitError as e:
        _echo(f"error: {_one_line(e)}")
        sys.exit(2)
    if rc == 130:  # typer >= 0.29 turns Ctrl-C inside the command into a quiet return of 130, not an exception
        _echo(_INTERRUPTED)
    sys.exit(rc if isinstance(rc, int) else 0)


def _one_line(error: EdgeVitError) -> str:
    """The error's message; for one re-raised from a DataLoader worker (whose message holds the worker's
    traceback: "Caught EdgeVitError in DataLoader worker process 0. Original Traceback ..."), its last line."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    return text.splitlines()[-1].split("EdgeVitError: ", 1)[-1]


__all__ = ["app", "main"]
