"""The ``edgevit`` Typer app and what every command module shares: the backend and precision choices (from the
backend registry) and one-line messages on stderr. Commands live in :mod:`edgevit.cli.pipeline` (a run's stages) and
:mod:`edgevit.cli.tools` (zoo, benchmarks, targets, apps)."""

from __future__ import annotations

from enum import Enum

import typer

from edgevit.backends import all_precisions, list_backends

app = typer.Typer(
    name="edgevit",
    help="Train, quantize and export vision transformers for phones, with parity checked on real data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# the choices come from the backend registry (edgevit.backends): a new backend is a valid --backend the day it lands
BackendName = Enum("BackendName", {b: b for b in list_backends()}, type=str)
Precision = Enum("Precision", {p.replace("-", "_"): p for p in all_precisions()}, type=str)


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)
