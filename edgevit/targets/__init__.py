"""Emulated device targets: a cached toolchain (emulator, sysroot, runtimes) that runs artifacts elsewhere.

``edgevit target setup NAME`` builds a target's cache once; ``edgevit parity RUN --device NAME`` then runs the
run's artifacts on it (see :mod:`edgevit.parity.devices`). Each target module provides a class with ``name``,
``description``, ``setup(cache, progress)``, ``ready(cache)`` and ``run(backend, model, images, threads,
progress)``.

The cache lives under ``$EDGEVIT_CACHE/targets/NAME`` (default ``~/.cache/edgevit/targets/NAME``); a setup step
builds into a temporary directory beside its final place and renames it there, then writes a stamp naming what
it built from, so an interrupted setup resumes where it stopped and a finished one is a no-op.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevit.utils import EdgeVitError, progress_bar, write_json_atomic

TARGETS = {"android-arm64": "edgevit.targets.android_arm64:AndroidArm64"}


def list_targets() -> list[str]:
    """Names of the emulated targets."""
    return sorted(TARGETS)


def get_target(name: str, cache: str | os.PathLike | None = None, **options):
    """The target ``name`` with its cache directory (``cache`` or the default) and target ``options`` (e.g.
    ``mirror=``); raises EdgeVitError if unknown."""
    if name not in TARGETS:
        raise EdgeVitError(f"unknown target {name!r}; choose one of {', '.join(list_targets())}")
    module, cls = TARGETS[name].split(":")
    return getattr(importlib.import_module(module), cls)(Path(cache) if cache else default_cache(name), **options)


def default_cache(name: str) -> Path:
    """``$EDGEVIT_CACHE/targets/NAME``, else ``$XDG_CACHE_HOME/edgevit/targets/NAME`` or ``~/.cache/...``."""
    root = os.environ.get("EDGEVIT_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgevit"
    return Path(root) / "targets" / name


@dataclass
class Step:
    """One cached setup step: ``build(tmp)`` fills the empty directory ``tmp``, which then becomes ``cache/dest``.

    ``key`` names what the result is built from (versions, URLs); a stamp holding the same key means done.
    """

    name: str
    dest: str
    key: dict[str, Any]
    build: Callable[[Path], None]


def run_steps(cache: Path, steps: list[Step], progress: bool = True, title: str = "setup") -> list[str]:
    """Run the ``steps`` whose stamp is missing or stale, in order; return the names of those that ran.

    Each step builds into ``cache/.tmp-NAME-*`` and is renamed to ``cache/DEST`` only when it succeeds, then its
    stamp ``cache/.stamps/NAME.json`` is written; leftovers of an interrupted run are removed first. Runs under
    a lock file so that two setups of the same cache do not interleave.
    """
    cache.mkdir(parents=True, exist_ok=True)
    ran = []
    with _locked(cache / ".lock"), progress_bar(progress) as bars:
        for stale in cache.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        task = bars.add_task(title, total=len(steps), info="")
        for step in steps:
            stamp = cache / ".stamps" / f"{step.name}.json"
            if _stamp(stamp) == step.key and (cache / step.dest).exists():
                bars.update(task, advance=1, info=f"{step.name}: cached")
                continue
            bars.update(task, info=f"{step.name}…")
            stamp.unlink(missing_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{step.name}-", dir=cache))
            try:
                step.build(tmp)
                final = cache / step.dest
                if final.exists():
                    shutil.rmtree(final)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            write_json_atomic(stamp, step.key)
            ran.append(step.name)
            bars.update(task, advance=1, info=f"{step.name}: done")
    return ran


def pending_steps(cache: Path, steps: list[Step]) -> list[str]:
    """Names of ``steps`` that are not up to date in ``cache`` (empty when the target is ready)."""
    return [
        s.name for s in steps if _stamp(cache / ".stamps" / f"{s.name}.json") != s.key or not (cache / s.dest).exists()
    ]


def _stamp(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # noqa: PLC0415 -- POSIX only

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["Step", "default_cache", "get_target", "list_targets", "pending_steps", "run_steps"]
