"""Small shared helpers: the error type, atomic writes, write checks, lazy imports of optional packages, progress."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EdgeVitError(Exception):
    """A user-facing error: the message says what was wrong, where, and what to do.

    The CLI prints it on one line and exits non-zero; library callers can catch it.
    """


def require(module: str, extra: str) -> Any:
    """Import a heavy optional backend lazily.

    Args:
        module: dotted module name, e.g. ``"coremltools"``.
        extra: the pip extra that provides it, e.g. ``"coreml"``.

    Returns:
        The imported module.

    Raises:
        EdgeVitError: the module is not installed; names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EdgeVitError(
            f"{module} is needed for this step but could not be imported ({e}); install it with "
            f"`pip install 'edgevit[{extra}]'`"
        ) from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Works for files and for directories (``.mlpackage``). A crash or an exception leaves any
    previous artifact at ``path`` untouched and no half-written file behind. The temporary directory is named
    ``.NAME.PID.XXXX``; one left by a process that was killed (``kill -9``: no ``finally`` ran) is removed by the
    next write of the same ``path`` (a live process's, e.g. a concurrent run's, is left alone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise EdgeVitError(f"internal error: nothing was written for {path}")
        _default_permissions(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary directories :func:`atomic_path` left beside ``path`` in processes that no longer run;
    returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if tmp.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped, for ``Path.glob``."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` cannot be written: its nearest existing ancestor must be a directory
    this process can create files in (probed by creating and removing one, which also catches read-only file
    systems and runs as root). Nothing is created at ``path``.

    Raises:
        EdgeVitError: naming ``what``, the path and why.
    """
    path = Path(path)
    probe = path if path.is_dir() else path.parent  # a run directory that exists: files go inside it
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise EdgeVitError(f"cannot write {what} {path}: {probe} is a file, not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".edgevit-write-check.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise EdgeVitError(f"cannot write {what} {path}: {probe} is not writable ({e.strerror})") from None
    return path


def _default_permissions(path: Path) -> None:
    """Give a finished temp file/dir the permissions a plain ``open()`` would have (mkdtemp uses 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file with a clear error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVitError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeVitError(f"{what} {path} is not valid JSON: {e}") from e


def path_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or of all files under a directory (``.mlpackage``)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence a converter's own Python-level prints and tqdm bars (edgevit shows its own progress)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def progress_bar(enabled: bool = True):
    """A rich ``Progress`` with description, bar, count, ETA and a free ``info`` field; a no-op if disabled.

    Tasks must be added with ``info=""``; update it with ``bars.update(task, info=...)``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )
