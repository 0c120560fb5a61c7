"""The counting emulator: QEMU user-mode (``aarch64-linux-user``) built with TCG plugins, and edgevit's plugin.

Debian's ``qemu-user`` is a static build configured ``--disable-plugins`` (``-plugin`` is an unknown option there)
and no Debian package ships QEMU's plugin-enabled user-mode emulator, so :func:`build_qemu` builds one from
Debian's own ``qemu`` source package (the same suite and version as the ``qemu-user`` binary the target runs
logits with), and :func:`build_plugin` compiles ``plugins/count.c`` against that source's
``include/qemu/qemu-plugin.h`` (plugin API version 4).

Building needs a C compiler, ninja, pkg-config and glib's headers (``apt-get install gcc ninja-build pkg-config
libglib2.0-dev``); meson 1.5.0 and pycotap come from PyPI into the build directory (the ``+ds`` source tarball
ships no bundled wheels). ~5 min of CPU. The build directory persists under the cache until the build succeeds,
so an interrupted build resumes where ninja stopped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from edgevit.utils import EdgeVitError

SOURCE_SUITE, SOURCE_PACKAGE = "trixie", "qemu"
SERIES = "10.0"  # QEMU release series the plugin is written for (plugin API version 4)
CONFIGURE = (
    "--target-list=aarch64-linux-user",
    "--enable-plugins",
    "--disable-docs",
    "--disable-tools",
    "-Dcapstone=disabled",
    "--disable-rust",
    "--disable-install-blobs",
    "--disable-debug-info",
)
PYTHON_BUILD_DEPS = ("meson==1.5.0", "pycotap==1.3.1")
PLUGIN_SOURCE = Path(__file__).with_name("plugins") / "count.c"
# what each build prerequisite is called in Debian/Ubuntu
TOOLS = {"cc": "gcc", "ninja": "ninja-build", "pkg-config": "pkg-config", "tar": "tar", "xz": "xz-utils"}
PKG_CONFIG_MODULES = {"glib-2.0": "libglib2.0-dev", "gmodule-2.0": "libglib2.0-dev"}


def missing_prerequisites() -> list[tuple[str, str]]:
    """``(what, Debian package)`` for each build prerequisite not found on this host (empty: all there)."""
    missing = [(tool, pkg) for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if shutil.which("pkg-config"):
        for module, pkg in PKG_CONFIG_MODULES.items():
            if subprocess.run(["pkg-config", "--exists", module], check=False).returncode != 0:
                missing.append((f"{module} headers", pkg))
    try:
        import venv  # noqa: F401, PLC0415  (QEMU's configure makes a venv with this Python)
    except ImportError:
        missing.append(("python venv module", f"python3.{sys.version_info.minor}-venv"))
    return missing


def check_prerequisites() -> None:
    """Raise EdgeVitError naming every missing build prerequisite and the command that installs them."""
    if missing := missing_prerequisites():
        what = ", ".join(w for w, _ in missing)
        pkgs = " ".join(sorted({p for _, p in missing}))
        raise EdgeVitError(
            f"building the counting emulator (QEMU with plugins) needs {what}, not found on this host: on "
            f"Debian/Ubuntu `apt-get install {pkgs}` (as root), then run `edgevit target setup` again"
        )


def plugin_key() -> dict[str, str]:
    """What the plugin is built from (its source's SHA-256 and the plugin API series)."""
    return {"source_sha256": hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest(), "qemu_series": SERIES}


def build_qemu(out: Path, work: Path, fetch_source: Callable[[Path], None], run) -> None:
    """Build ``qemu-aarch64`` with plugins into ``out`` (with ``include/qemu-plugin.h`` and ``VERSION``).

    Args:
        out: the empty directory to fill.
        work: a persistent build directory (kept until the build succeeds, so a rerun resumes).
        fetch_source: ``fetch_source(dir)`` downloads the Debian source package (``.dsc``, ``.orig.tar.xz``,
            ``.debian.tar.xz``) into ``dir``.
        run: ``run(cmd, what, hint, **kw)`` runs a command, raising EdgeVitError on failure.

    Raises:
        EdgeVitError: a missing prerequisite (named), a failed download, or a failed configure/compile (with the
            tail of its output).
    """
    check_prerequisites()
    work.mkdir(parents=True, exist_ok=True)
    src, build, pydeps = work / "src", work / "build", work / "pydeps"
    version_file = work / "source-version"
    if not version_file.is_file():
        shutil.rmtree(src, ignore_errors=True)
        dl = work / "download"
        shutil.rmtree(dl, ignore_errors=True)
        dl.mkdir()
        fetch_source(dl)
        tarballs = sorted(dl.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
        if not tarballs:
            raise EdgeVitError(f"the {SOURCE_PACKAGE} source download has no .orig tarball ({os.listdir(dl)})")
        version = tarballs[0].name.split("_", 1)[1].split(".orig")[0]  # e.g. 10.0.13+ds
        if not version.startswith(SERIES + "."):
            raise EdgeVitError(
                f"Debian {SOURCE_SUITE} now ships QEMU {version}; edgevit's counting plugin is written for QEMU "
                f"{SERIES}.x (plugin API 4): update edgevit.targets.qemu_build.SERIES after checking the plugin API"
            )
        _unpack(tarballs[0], src)
        shutil.rmtree(dl, ignore_errors=True)
        version_file.write_text(version + "\n")
    version = version_file.read_text().strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MESON"))} | {"PYTHONPATH": str(pydeps)}
    if not (pydeps / "mesonbuild").is_dir():
        run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(pydeps)]
            + list(PYTHON_BUILD_DEPS),
            f"installing {' '.join(PYTHON_BUILD_DEPS)} (QEMU's build system) from PyPI",
            "check access to PyPI (pip config, PIP_INDEX_URL)",
        )
    if not (build / "build.ninja").is_file():
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir()
        run(
            [str(src / "configure"), f"--python={sys.executable}", *CONFIGURE],
            f"configuring QEMU {version} (aarch64-linux-user with plugins)",
            f"see {build}/meson-logs/meson-log.txt; delete {work} to start the build over",
            cwd=build,
            env=env,
        )
    run(
        ["ninja", "-j", str(os.cpu_count() or 2), "qemu-aarch64"],
        f"compiling QEMU {version} (qemu-aarch64 with plugins, ~5 min of CPU)",
        f"rerun setup to resume; delete {work} to start the build over",
        cwd=build,
        env=env,
    )
    shutil.copy2(build / "qemu-aarch64", out / "qemu-aarch64")
    (out / "include").mkdir()
    shutil.copy2(src / "include" / "qemu" / "qemu-plugin.h", out / "include" / "qemu-plugin.h")
    first = run([str(out / "qemu-aarch64"), "--version"], "running the built qemu-aarch64", "").stdout.splitlines()[0]
    (out / "VERSION").write_text(f"{first}\nDebian {SOURCE_SUITE} source {SOURCE_PACKAGE} {version}\n")
    shutil.rmtree(work, ignore_errors=True)  # built: the ~1 GB source and build trees are not needed any more


def build_plugin(out: Path, qemu_dir: Path, run) -> None:
    """Compile :data:`PLUGIN_SOURCE` into ``out/libcount.so`` against ``qemu_dir/include/qemu-plugin.h``.

    Raises:
        EdgeVitError: a missing prerequisite (named) or a compile error (with the compiler's output).
    """
    check_prerequisites()
    cflags = run(["pkg-config", "--cflags", "glib-2.0"], "asking pkg-config for glib's flags", "").stdout.split()
    run(
        ["cc", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(out / "libcount.so"), str(PLUGIN_SOURCE)]
        + ["-I", str(qemu_dir / "include"), *cflags],
        f"compiling the counting plugin {PLUGIN_SOURCE.name}",
        "the plugin must build against QEMU's include/qemu/qemu-plugin.h (API version 4)",
    )


def _unpack(tarball: Path, dest: Path) -> None:
    """Extract ``tarball`` (one top-level directory) into ``dest``, refusing members that escape it."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp, filter="data")
    (top,) = list(tmp.iterdir())
    os.replace(top, dest)
    tmp.rmdir()


__all__ = [
    "CONFIGURE",
    "PLUGIN_SOURCE",
    "SERIES",
    "build_plugin",
    "build_qemu",
    "check_prerequisites",
    "missing_prerequisites",
    "plugin_key",
]
