"""``android-arm64``: an Android-class ARM64 CPU, emulated with user-mode QEMU on an x86-64 host.

The artifacts run in the official aarch64 builds of LiteRT (``ai-edge-litert``, XNNPACK delegate), ONNX Runtime
(MLAS) and ExecuTorch (the ``executorch`` wheel's runtime libraries at the host's version, XNNPACK delegate; how:
:mod:`edgevit.targets.executorch_runtime`), so their ARM64 NEON kernels compute the logits; the guest is Debian
trixie's arm64 Python 3.13.

Setup (no root, no system install, nothing registered with binfmt), cached under the target's directory:

- ``sysroot/``: trixie arm64 ``python3.13`` + ``libstdc++6`` and their dependency closure (~20 MB of ``.deb``),
  resolved by ``apt-get install --download-only`` against a private apt state directory (an empty dpkg status,
  so only these packages and what they need are fetched), unpacked with ``dpkg-deb -x``. Unlike ``debootstrap
  --foreign`` this needs neither root nor the whole ``required`` package set. Its
  ``sys/devices/system/cpu/{possible,present,online}`` say ``0`` (QEMU's ``-L`` serves them to the guest): one
  CPU, so no runtime starts a worker thread behind the requested count (ExecuTorch sizes its threadpool from them).
- ``qemu/qemu-aarch64``: the static ``qemu-aarch64`` from Debian trixie's ``qemu-user`` (QEMU 10; bookworm's
  7.2 crashes as soon as either runtime starts), fetched with ``apt-get download`` the same private way.
- ``site/``: aarch64 manylinux wheels of ``ai-edge-litert``, ``onnxruntime`` and ``numpy`` at the host's
  installed versions (``pip install --target --platform ... --only-binary=:all: --no-deps``), then a check that
  the runtimes import under emulation.
- ``executorch/``: ExecuTorch's aarch64 runtime libraries from the ``executorch`` wheel at the host's version and
  edgevit's C entry point to them, cross-compiled (needs ``aarch64-linux-gnu-g++``), then a check that they load
  under emulation.
- ``counting/`` and ``plugin/``: the counting emulator for cost profiles (:mod:`edgevit.targets.cost`): QEMU
  user-mode with plugins built from Debian trixie's ``qemu`` source package, and edgevit's counting plugin
  (:mod:`edgevit.targets.qemu_build`; needs a C compiler, ninja, pkg-config and glib's headers).

Needs ``apt-get`` and ``dpkg-deb`` (any Debian or Ubuntu host) and Debian's archive keyring
(``/usr/share/keyrings/debian-archive-keyring.gpg``, package ``debian-archive-keyring``).

Why one file over ~450 lines: the target is one class whose set-up steps, guest environment and runners share
its cache layout; the counting emulator's build and the cost profile live in their own modules.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import numpy as np

from edgevit.backends import RunFailed
from edgevit.targets import Step, default_cache, executorch_runtime, pending_steps, qemu_build, run_steps
from edgevit.utils import EdgeVitError, progress_bar

DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SYSROOT_SUITE, SYSROOT_PACKAGES, PYTHON = "trixie", ("python3.13", "libstdc++6"), "3.13"
QEMU_SUITE, QEMU_PACKAGE = "trixie", "qemu-user"
RUNTIMES = ("ai-edge-litert", "onnxruntime", "numpy")  # pinned to the host's installed versions
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
# A Cortex-A76 (Armv8.2-A: NEON, fp16 arithmetic, dot product): the big core of most Android phones since 2019.
# QEMU's default "max" CPU would enable SVE/SME kernels that few phones have.
DEFAULT_CPU = "cortex-a76"
BACKENDS = ("tflite", "onnx", "executorch")
NOT_RUN = {"coreml": "Core ML runs on Apple platforms only"}
# One CPU for the guest (see the module docstring): written into the sysroot's sys/devices/system/cpu/.
CPU_FILES = ("possible", "present", "online")
RUNNER = Path(__file__).with_name("_arm64_runner.py")


class AndroidArm64:
    """The ``android-arm64`` target rooted at ``cache``; ``mirror`` is a Debian mirror URL (default
    ``$EDGEVIT_DEBIAN_MIRROR`` or deb.debian.org)."""

    name = "android-arm64"
    description = (
        f"ARM64 ({DEFAULT_CPU}) under QEMU user-mode emulation: the official aarch64 builds of LiteRT and ONNX "
        "Runtime, and ExecuTorch's aarch64 runtime libraries, so their ARM64 NEON kernels compute the logits"
    )

    def __init__(self, cache: Path, mirror: str | None = None, cpu: str = DEFAULT_CPU) -> None:
        self.cache = Path(cache)
        self.mirror = (mirror or os.environ.get("EDGEVIT_DEBIAN_MIRROR") or DEFAULT_MIRROR).rstrip("/")
        self.cpu = cpu

    # --- setup ---------------------------------------------------------------------------------------------

    @property
    def qemu(self) -> Path:
        return self.cache / "qemu" / "qemu-aarch64"

    @property
    def sysroot(self) -> Path:
        return self.cache / "sysroot"

    @property
    def site(self) -> Path:
        return self.cache / "site"

    @property
    def counting_qemu(self) -> Path:
        """QEMU user-mode with plugins (:mod:`edgevit.targets.qemu_build`)."""
        return self.cache / "counting" / "qemu-aarch64"

    @property
    def plugin(self) -> Path:
        """The counting plugin (``plugins/count.c``) built for :attr:`counting_qemu`."""
        return self.cache / "plugin" / "libcount.so"

    def steps(self) -> list[Step]:
        """The setup steps, each keyed by what it is built from (so a new host runtime version rebuilds wheels)."""
        return [
            Step(
                "sysroot",
                "sysroot",
                {
                    "suite": SYSROOT_SUITE,
                    "arch": "arm64",
                    "packages": list(SYSROOT_PACKAGES),
                    "merged_usr": True,
                    "cpus": 1,
                },
                self._build_sysroot,
            ),
            Step("qemu", "qemu", {"suite": QEMU_SUITE, "package": QEMU_PACKAGE}, self._build_qemu),
            Step("wheels", "site", {"python": PYTHON, "requirements": self.requirements()}, self._build_site),
            Step(
                "counting-qemu",
                "counting",
                {
                    "suite": qemu_build.SOURCE_SUITE,
                    "source": qemu_build.SOURCE_PACKAGE,
                    "series": qemu_build.SERIES,
                    "configure": list(qemu_build.CONFIGURE),
                    "build_deps": list(qemu_build.PYTHON_BUILD_DEPS),
                },
                self._build_counting_qemu,
            ),
            Step("count-plugin", "plugin", qemu_build.plugin_key(), self._build_plugin),
        ] + (  # without ExecuTorch on the host there are no .pte files to run
            [Step("executorch-runtime", "executorch", executorch_runtime.key(et), self._build_executorch)]
            if (et := executorch_runtime.host_version())
            else []
        )

    def requirements(self) -> list[str]:
        """``name==version`` of each Python runtime as installed on the host; raises EdgeVitError if one is missing
        on the host."""
        reqs = []
        for name in RUNTIMES:
            try:
                reqs.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError as e:
                raise EdgeVitError(
                    f"{name} is not installed on this host; the emulated target uses the host's versions: "
                    "`pip install 'edgevit[tflite,onnx]'`"
                ) from e
        return reqs

    def setup(self, progress: bool = True) -> list[str]:
        """Build whatever is missing or stale; return the names of the steps that ran (empty: already set up).

        Raises:
            EdgeVitError: a non-x86-64 host, missing ``apt-get``/``dpkg-deb``/keyring or compilers (named), a refused
                download (names the URL or package), or runtimes that do not start under emulation.
        """
        if platform.machine() not in ("x86_64", "AMD64"):
            raise EdgeVitError(f"{self.name} emulates ARM64 on an x86-64 host; this host is {platform.machine()}")
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise EdgeVitError(
                    f"`{tool}` not found: {self.name} setup fetches Debian packages; it needs a Debian or "
                    "Ubuntu host (apt and dpkg)"
                )
        if not KEYRING.is_file():
            raise EdgeVitError(
                f"{KEYRING} not found: install Debian's archive keyring (`apt-get install "
                "debian-archive-keyring`) so the downloaded packages can be verified"
            )
        pending = self.pending()  # a missing compiler is named before any download or build starts
        if {"counting-qemu", "count-plugin"} & set(pending):
            qemu_build.check_prerequisites()
        if "executorch-runtime" in pending:
            executorch_runtime.check_prerequisites()
        return run_steps(self.cache, self.steps(), progress=progress, title=f"{self.name} setup")

    def ensure_ready(self) -> None:
        """Raise EdgeVitError naming the setup command when a setup step is missing or stale."""
        if missing := self.pending():
            raise EdgeVitError(
                f"{self.name} is not set up in {self.cache} (missing or stale: {', '.join(missing)}); run "
                f"`edgevit target setup {self.name}{_cache_flag(self.cache)}`"
            )

    def versions(self) -> dict[str, str | list[str]]:
        """What computes the logits and counts: the QEMU builds, the guest Python, the runtime wheels and the build
        that runs ``.pte`` files (for the report)."""

        def first_lines(path: Path, n: int = 1) -> str:
            return " ".join(path.read_text().splitlines()[:n]) if path.is_file() else "not set up"

        return {
            "qemu": first_lines(self.cache / "qemu" / "VERSION"),
            "counting_qemu": first_lines(self.cache / "counting" / "VERSION", 2),
            "guest": f"Debian {SYSROOT_SUITE} arm64, Python {PYTHON}, -cpu {self.cpu}, 1 CPU",
            "runtimes": self.requirements(),
            "executorch": executorch_runtime.label(et) if (et := executorch_runtime.host_version()) else "none",
        }

    def pending(self) -> list[str]:
        """Setup steps not yet done (empty when :meth:`setup` has nothing left to do)."""
        return pending_steps(self.cache, self.steps())

    def _apt(self, state: Path, suite: str, arch: str, source: bool = False) -> list[str]:
        """``apt-get`` confined to ``state`` (its own sources, lists, archives and an empty dpkg status);
        ``source``: a ``deb-src`` index (for ``apt-get source``) instead of the binary one."""
        for d in ("lists/partial", "archives/partial"):
            (state / d).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        line = f"deb-src [signed-by={KEYRING}]" if source else f"deb [arch={arch} signed-by={KEYRING}]"
        (state / "sources.list").write_text(f"{line} {self.mirror} {suite} main\n")
        opts = {
            "Dir::State": state,
            "Dir::State::Lists": state / "lists",
            "Dir::State::status": state / "status",
            "Dir::Cache": state,
            "Dir::Cache::Archives": state / "archives",
            "Dir::Etc::SourceList": state / "sources.list",
            "Dir::Etc::SourceParts": state / "none",
            "Dir::Etc::Preferences": state / "none",
            "Dir::Etc::PreferencesParts": state / "none",
            "Dir::Etc::Parts": state / "none",
            "Debug::NoLocking": 1,
            "APT::Sandbox::User": "root",  # no privilege drop: the files are ours
            "Acquire::Languages": "none",
            "APT::Architecture": arch,
            "APT::Architectures::": arch,
        }
        args = ["apt-get", "-q"]
        for k, v in opts.items():
            args += ["-o", f"{k}={v}"]
        _run(
            [*args, "update"],
            f"downloading the Debian {suite} {arch} package index from {self.mirror}",
            self._net_hint(),
            ok_if=_apt_update_ok,
        )
        return args

    def _net_hint(self) -> str:
        return (
            f"check that this machine can reach {self.mirror} (a proxy needs http_proxy), or point "
            "EDGEVIT_DEBIAN_MIRROR (or --mirror) at a reachable Debian mirror"
        )

    def _build_sysroot(self, out: Path) -> None:
        state = out.parent / f"{out.name}-apt"
        try:
            apt = self._apt(state, SYSROOT_SUITE, "arm64")
            _run(
                [*apt, "install", "--download-only", "-y", "--no-install-recommends", *SYSROOT_PACKAGES],
                f"downloading arm64 {' '.join(SYSROOT_PACKAGES)} from {self.mirror} ({SYSROOT_SUITE})",
                self._net_hint(),
            )
            debs = sorted((state / "archives").glob("*.deb"))
            if not debs:
                raise EdgeVitError(f"apt downloaded no packages for {' '.join(SYSROOT_PACKAGES)} from {self.mirror}")
            for deb in debs:
                _run(
                    ["dpkg-deb", "-x", str(deb), str(out)],
                    f"unpacking {deb.name}",
                    "the download may be corrupt; run setup again",
                )
        finally:
            shutil.rmtree(state, ignore_errors=True)
        if not (out / "usr/bin" / f"python{PYTHON}").is_file():
            raise EdgeVitError(f"the arm64 sysroot has no usr/bin/python{PYTHON} after unpacking")
        for top in ("bin", "sbin", "lib"):  # trixie is merged-/usr (base-files makes these links; not unpacked here)
            if not (out / top).exists():
                (out / top).symlink_to(f"usr/{top}")
        cpus = out / "sys/devices/system/cpu"
        cpus.mkdir(parents=True)
        for name in CPU_FILES:
            (cpus / name).write_text("0\n")

    def _build_qemu(self, out: Path) -> None:
        state = out.parent / f"{out.name}-apt"
        try:
            apt = self._apt(state, QEMU_SUITE, "amd64")
            _run(
                [*apt, "download", QEMU_PACKAGE],
                f"downloading {QEMU_PACKAGE} from {self.mirror} ({QEMU_SUITE})",
                self._net_hint(),
                cwd=state,
            )
            (deb,) = state.glob(f"{QEMU_PACKAGE}_*.deb")
            # only the one binary we need (the package holds every architecture's, ~465 MB unpacked)
            tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=False)
            if tar.returncode:
                raise EdgeVitError(f"could not read {deb.name}: {tar.stderr.decode()[-500:]}; run setup again")
            _run(
                ["tar", "-x", "-C", str(state), "./usr/bin/qemu-aarch64"],
                f"unpacking qemu-aarch64 from {deb.name}",
                "the download may be corrupt; run setup again",
                input=tar.stdout,
            )
            shutil.move(state / "usr/bin/qemu-aarch64", out / "qemu-aarch64")
            version = _run([str(out / "qemu-aarch64"), "--version"], "running qemu-aarch64", "").stdout
            (out / "VERSION").write_text(version.splitlines()[0] + f"\n{deb.name}\n")
        finally:
            shutil.rmtree(state, ignore_errors=True)

    def _build_site(self, out: Path) -> None:
        reqs = self.requirements()
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(out),
            "--python-version",
            PYTHON,
            "--implementation",
            "cp",
            "--only-binary=:all:",
        ]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        _run(
            [*cmd, *reqs],
            f"downloading aarch64 wheels {' '.join(reqs)} from {os.environ.get('PIP_INDEX_URL') or 'PyPI'}",
            "check access to PyPI (pip config, PIP_INDEX_URL) and that these versions publish manylinux aarch64 "
            f"wheels for CPython {PYTHON}",
        )
        # the runtimes must start under emulation (this also writes their bytecode caches, once: runs do not
        # write any, so that every counted run does the same work)
        self._python(
            ["-c", "import numpy, onnxruntime, ai_edge_litert.interpreter"],
            site=out,
            what="importing the aarch64 runtimes under emulation",
        )

    def _build_counting_qemu(self, out: Path) -> None:
        def fetch(dest: Path) -> None:
            state = dest / "apt"
            apt = self._apt(state, qemu_build.SOURCE_SUITE, "amd64", source=True)
            _run(
                [*apt, "source", "--download-only", qemu_build.SOURCE_PACKAGE],
                f"downloading Debian {qemu_build.SOURCE_SUITE}'s {qemu_build.SOURCE_PACKAGE} source package from "
                f"{self.mirror}",
                self._net_hint(),
                cwd=dest,
            )
            shutil.rmtree(state, ignore_errors=True)

        qemu_build.build_qemu(out, self.cache / ".work-counting-qemu", fetch, _run)

    def _build_plugin(self, out: Path) -> None:
        qemu_build.build_plugin(out, self.cache / "counting", _run)

    def _build_executorch(self, out: Path) -> None:
        executorch_runtime.build(out, executorch_runtime.host_version(), _run)
        # the libraries must load under emulation (the XNNPACK delegate and kernels register themselves then)
        self._python(
            ["-c", f"import ctypes; ctypes.CDLL({str(out / 'lib' / executorch_runtime.SHIM_LIB)!r})"],
            site=self.site,
            what="loading ExecuTorch's aarch64 runtime under emulation",
        )

    @property
    def executorch_lib(self) -> Path:
        """The compiled entry point to ExecuTorch's aarch64 runtime (:mod:`edgevit.targets.executorch_runtime`)."""
        return self.cache / "executorch" / "lib" / executorch_runtime.SHIM_LIB

    # --- running -------------------------------------------------------------------------------------------

    def unsupported(self, backend: str) -> str | None:
        """Why artifacts of ``backend`` cannot run on this target, or None."""
        if backend == "executorch" and executorch_runtime.host_version() is None:
            return executorch_runtime.NOT_INSTALLED
        if backend in BACKENDS:
            return None
        return NOT_RUN.get(backend, f"{backend} has no ARM64 Linux runtime here")

    def run(
        self,
        backend: str,
        model: Path,
        images: np.ndarray,
        threads: int = 1,
        progress: bool = True,
        cpu: str | None = None,
    ) -> np.ndarray:
        """Logits ``[N, K]`` of ``model`` on every ``[N, C, H, W]`` image (batch 1), all in one emulated process
        on QEMU's ``cpu`` model (default this target's, :data:`DEFAULT_CPU`).

        Raises:
            EdgeVitError: the target is not set up, or ``backend`` cannot run here.
            RunFailed: the runtime crashed or failed under emulation (the message holds its last output).
        """
        if reason := self.unsupported(backend):
            raise EdgeVitError(reason)
        self.ensure_ready()
        with tempfile.TemporaryDirectory(prefix="edgevit-arm64-") as work:
            work = Path(work)
            shipped = work / ("model" + Path(model).suffix)  # what the guest sees: its own copy of the artifact
            shutil.copyfile(model, shipped)
            np.save(work / "images.npy", np.ascontiguousarray(images, dtype=np.float32))
            args = ["logits", backend, shipped.name, "images.npy", "logits.npy", str(threads)]
            proc = self.guest(args, work, cpu=cpu, total=len(images), desc=f"{backend} on {self.name} (emulated)")
            self.raise_failed(proc, backend, work / "logits.npy")
            return np.load(work / "logits.npy")

    def guest(
        self,
        args: list[str],
        work: Path,
        cpu: str | None = None,
        plugin_out: str | None = None,
        total: int = 0,
        desc: str = "",
        progress: bool = True,
    ) -> subprocess.Popen:
        """Start :data:`RUNNER` with ``args`` in the emulated Python, in directory ``work`` (its stdout is read for
        ``done I`` progress lines, its stderr goes to ``work/stderr.txt``); returns the process after it exited,
        with ``tail`` (its last output lines) set.

        ``plugin_out``: run under the counting emulator with the counting plugin writing its blocks to that file
        (relative to ``work``), in the deterministic setting :mod:`edgevit.targets.cost` describes: a clean
        environment (``PYTHONHASHSEED=0``, one BLAS/OpenMP thread, no bytecode writes), ``-R 16G`` (a fixed guest
        address space, so every run maps everything at the same addresses) and ``-seed 0`` (fixed ``AT_RANDOM``).
        """
        python = self.sysroot / "usr/bin" / f"python{PYTHON}"
        cmd = [str(self.qemu), "-L", str(self.sysroot), "-cpu", cpu or self.cpu]
        if plugin_out is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "LD_"))}
            env |= {"PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}
            env |= {"PYTHONDONTWRITEBYTECODE": "1", "EDGEVIT_EXECUTORCH_LIB": str(self.executorch_lib)}
        else:
            cmd[0] = str(self.counting_qemu)
            cmd += ["-R", "16G", "-seed", "0", "-plugin", f"{self.plugin},out={plugin_out}"]
            env = {  # env -i plus only these
                "PYTHONPATH": str(self.site),
                "PYTHONNOUSERSITE": "1",
                "PYTHONHASHSEED": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "LANG": "C.UTF-8",
                "EDGEVIT_EXECUTORCH_LIB": str(self.executorch_lib),
            }
        cmd += [str(python), "-s", "-P", str(RUNNER), *args]
        with open(work / "stderr.txt", "w") as err, progress_bar(progress and total > 0) as bars:
            task = bars.add_task(desc, total=total, info="")
            proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.PIPE, stderr=err, text=True)
            tail: deque[str] = deque(maxlen=20)
            for line in proc.stdout:
                if line.startswith("done "):
                    bars.update(task, completed=int(line.split()[1]))
                else:
                    tail.append(line.rstrip())
            proc.wait()
        proc.tail = [*tail, *(work / "stderr.txt").read_text().splitlines()[-20:]]
        return proc

    def raise_failed(self, proc: subprocess.Popen, backend: str, out: Path) -> None:
        """Raise RunFailed (with the guest's last output) when ``proc`` failed or did not write ``out``."""
        rc = proc.returncode
        if rc != 0 or not out.is_file():
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            raise RunFailed(f"{backend} failed on {self.name} ({how}): " + "\n".join(proc.tail)[-1500:])

    def _cmd(self, args: list[str]) -> list[str]:
        python = self.sysroot / "usr/bin" / f"python{PYTHON}"
        return [str(self.qemu), "-L", str(self.sysroot), "-cpu", self.cpu, str(python), "-s", *args]

    def _env(self, site: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "LD_"))}
        return env | {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}

    def _python(self, args: list[str], site: Path, what: str) -> subprocess.CompletedProcess:
        return _run(
            self._cmd(args),
            what,
            f"the cached target may be damaged: delete {self.cache} and run `edgevit target setup {self.name}` again",
            env=self._env(site),
        )


def _cache_flag(cache: Path) -> str:
    return "" if cache == default_cache(AndroidArm64.name) else f" --cache {cache}"


def _apt_update_ok(proc: subprocess.CompletedProcess) -> bool:
    """apt-get update can exit 0 having fetched nothing (it then only warns); treat that as a failure."""
    text = proc.stdout + proc.stderr
    return proc.returncode == 0 and "Failed to fetch" not in text and "W: Some index files failed" not in text


def _run(cmd: list[str], what: str, hint: str, ok_if=None, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` capturing its output; on failure raise EdgeVitError saying ``what`` failed, why and ``hint``."""
    text = "input" not in kw
    try:
        proc = subprocess.run(cmd, capture_output=True, text=text, check=False, **kw)
    except FileNotFoundError as e:
        raise EdgeVitError(f"{what}: {cmd[0]} not found") from e
    ok = ok_if(proc) if ok_if else proc.returncode == 0
    if not ok:
        out = proc.stderr if text else proc.stderr.decode(errors="replace")
        out = out or (proc.stdout if text else "")
        lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
        status = f" (exit {proc.returncode})" if proc.returncode else ""
        detail = " | ".join(lines[-6:])[-1200:].rstrip(". ")
        raise EdgeVitError(f"{what} failed{status}: {detail}. {hint}".rstrip())
    return proc
