"""The parity report: :class:`ParityReport` is the ``parity.json`` document; :func:`render_markdown` renders it.

:func:`edgevit.parity.check` returns a :class:`ParityReport`; :func:`write_report` writes ``parity.json``,
``report.md`` and ``report.html``.

The schema (``schema_version`` :data:`SCHEMA_VERSION`), what each field means, the ``explain`` and ``vs_host``
blocks, and the schema's history live in one place: docs/reference/parity-json.md. Change that page together
with :meth:`ParityReport.to_json` and the rows :func:`edgevit.parity.check` builds, and bump
:data:`SCHEMA_VERSION` for anything a reader of an older file could misread; tests/test_docs.py fails when a key
written here is missing from the page. Metrics are null for an artifact that cannot run on this device: it is
listed, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.parity.cost import render_cost_markdown
from edgevit.parity.html import write_html
from edgevit.rundir import report_names
from edgevit.utils import write_json_atomic, write_text_atomic

SCHEMA_VERSION = 2


@dataclass
class ParityReport:
    """The outcome of :func:`check`; ``to_json()`` is the ``parity.json`` document."""

    num_images: int
    threads: int
    reference: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=lambda: {"name": "host", "emulated": False})
    cost: dict[str, Any] | None = None  # emulated ARM devices: how the artifacts were counted (edgevit.parity.cost)

    @property
    def passed(self) -> bool:
        """True when every runnable artifact met its tolerance."""
        return all(a["passed"] is not False for a in self.artifacts)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "num_images": self.num_images,
            "threads": self.threads,
            "reference": self.reference,
            "passed": self.passed,
            "artifacts": self.artifacts,
            "device": self.device,
            **({"cost": self.cost} if self.cost else {}),
        }


def write_report(report: ParityReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the JSON and Markdown reports (names from :func:`report_names`) into ``out_dir`` atomically, and
    the self-contained HTML page with plots beside the Markdown (``report.html``, :mod:`edgevit.parity.html`)."""
    out_dir = Path(out_dir)
    doc = report.to_json()
    json_name, md_name = report_names(report.device["name"])
    json_path = write_json_atomic(out_dir / json_name, doc)
    md_path = write_text_atomic(out_dir / md_name, render_markdown(doc))
    write_html(doc, md_path.with_suffix(".html"))
    return json_path, md_path


def fmt(v: Any, spec: str, none: str = "–") -> str:
    """``format(v, spec)``, or ``none`` for a missing value (old or partial ``parity.json`` files, rows not run)."""
    return none if v is None else format(v, spec)


def render_markdown(doc: dict[str, Any]) -> str:
    """``report.md`` from a ``parity.json`` document (any schema version; missing fields show as ``–``).

    One table for every device: each artifact vs PyTorch (top-1/top-5, agreement, errors, cosine, PSNR, KL), with
    latency, its ratio to the reference measured in the same run and peak memory where they were measured, and,
    on an emulated device, the same artifact's run on this host ("ARM64 vs x86"). A device other than the host
    gets a header saying what it is, its profile, and which parts of it were real or emulated.
    """
    dev = doc.get("device") or {"name": "host", "emulated": False}
    ref, arts = doc["reference"], doc["artifacts"]
    emulated = bool(dev.get("emulated"))
    ref_lat = ref.get("latency_ms") or {}
    timed = not emulated or any(a.get("latency_ms") for a in arts)
    on_host = dev.get("name", "host") == "host"
    lines = [f"# Parity report{'' if on_host else ': ' + dev['name']}", ""]
    if not on_host:
        lines += [f"Device: {dev.get('description', dev['name'])}. {dev.get('note', '')}".rstrip(), ""]
        if dev.get("versions"):
            versions = dev["versions"].items()
            lines += [", ".join(f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in versions), ""]
        if dev.get("profile"):
            lines += [_profile_line(dev["profile"]), ""]
    if dev.get("parts"):
        lines += ["| part | how | note |", "|---|---|---|"]
        lines += [f"| {p['what']} | {p['how']} | {p['note']} |" for p in dev["parts"]] + [""]
    ref_ms = ref_lat.get("median")
    lines += [
        f"{doc['num_images']} validation images, batch 1, {doc['threads']} threads. Reference: PyTorch fp32"
        f"{' on this host' if not on_host else ''}, top-1 {ref['top1']:.2f}%, top-5 {fmt(ref.get('top5'), '.2f')}%"
        + (f", latency median {ref_ms:.3f} ms" if ref_ms is not None and timed else "")
        + "."
        + (' "ARM64 vs x86": the same artifact run by the host (x86-64) build of its runtime.' if emulated else ""),
        "",
        f"**Overall: {'PASS' if doc['passed'] else 'FAIL'}**",
        "",
    ]

    def host(key: str, spec: str) -> Callable[[dict], str]:
        return lambda a: fmt((a.get("vs_host") or {}).get(key), spec)

    def col(key: str, spec: str) -> Callable[[dict], str]:
        return lambda a: fmt(a.get(key), spec)

    def lat(key: str) -> Callable[[dict], str]:
        return lambda a: fmt((a.get("latency_ms") or {}).get(key), ".3f")

    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("backend", lambda a: a["backend"]),
        ("precision", lambda a: a["precision"]),
        ("quantizer", lambda a: a.get("quantizer") or "–"),
        ("runs here", _runs_here),
    ]
    if emulated:
        columns += [
            ("ARM64 vs x86: agreement", host("agreement", ".4f")),
            ("max abs diff", host("max_abs_err", ".2e")),
            ("mean abs diff", host("mean_abs_err", ".2e")),
        ]
    columns += [
        ("top-1 %", col("top1", ".2f")),
        ("top-5 %", col("top5", ".2f")),
        ("agreement", col("agreement", ".4f")),
        ("max abs err", col("max_abs_err", ".2e")),
        ("mean abs err", col("mean_abs_err", ".2e")),
        ("cosine", col("cosine", ".6f")),
        ("PSNR dB", _psnr_cell),
        ("KL nats", col("kl_div", ".2e")),
    ]
    if timed:
        columns += [
            ("latency median ms", lat("median")),
            ("p90 ms", lat("p90")),
            ("std ms", lat("std")),
            ("vs PyTorch", lambda a: _speed_ratio(ref_ms, (a.get("latency_ms") or {}).get("median"))),
            ("peak MiB", col("peak_memory_mb", ".1f")),
        ]
    not_run = "not run: " if on_host else "not run on this device: "
    columns += [
        ("size KiB", lambda a: fmt(None if a.get("size_bytes") is None else a["size_bytes"] / 1024, ".0f")),
        ("result", lambda a: _result_cell(a, not_run)),
    ]
    lines += ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(a) for _, cell in columns) + " |" for a in arts]
    lines += [
        "",
        "Agreement: fraction of images whose top-1 class equals PyTorch fp32's. Cosine: mean over images of the "
        "logit-vector cosine similarity. PSNR: of all logits vs PyTorch's, peak = PyTorch's logit range (∞: "
        "identical). KL: mean KL(softmax(PyTorch) ‖ softmax(artifact)) in nats."
        + (
            " Latency is host latency of the runtime named (median, p90 and std over the timed runs), not phone "
            "latency. Peak MiB: the rise of this process's resident memory while loading and running the artifact."
            if timed
            else ""
        ),
        "",
    ]
    if emulated:
        tols = {a["precision"]: a["vs_host"]["tolerance"] for a in arts if a.get("vs_host")}
        tol_text = "; ".join(
            f"{p}: agreement ≥ {t['min_agreement']}"
            + (f", max abs diff ≤ {t['max_abs_err']:.0e}" if t.get("max_abs_err") else "")
            for p, t in tols.items()
        )
        lines += [
            "ARM64 vs x86 thresholds (parity.device_tolerances): " + (tol_text or "–") + ". ARM64 vs PyTorch: "
            "the recipe's usual tolerances.",
            "",
        ]
    emulated_rows = sorted({f"{a['backend']}: {a['execution']}" for a in arts if _runs_here(a) == "emulated"})
    if emulated_rows:  # say which numbers no real runtime produced
        lines += [
            f"Emulated here, not run by the real runtime ({'; '.join(emulated_rows)}): these rows are checked "
            "against their tolerances like the others, but come from edgevit's interpreter of the converted program "
            "(`edgevit.backends.coreml.emulator`), not from Core ML on Apple hardware; latency is not reported for "
            "them.",
            "",
        ]
    if dev.get("ships"):
        lines += [
            f"{dev['name']} would ship: `{dev['ships']}` (the first passing artifact in the profile's "
            "backend, then precision, preference).",
            "",
        ]
    return "\n".join(lines) + render_cost_markdown(doc)


def _profile_line(profile: dict[str, Any]) -> str:
    """One sentence describing a device profile: backends, precisions, threads, input and compute units."""
    inp = profile.get("input") or {}
    threads = profile.get("threads") or "the recipe's"
    text = (
        f"Profile `{profile['name']}`: backends {' > '.join(profile.get('backends', []))}; precisions "
        f"{' > '.join(profile.get('precisions', []))}; {threads} threads; input "
        f"{inp.get('layout', 'NCHW')} {inp.get('dtype', 'float32')}"
    )
    if profile.get("compute_units"):
        text += f"; Core ML compute units {profile['compute_units']}"
    return text + "."


def _psnr_cell(a: dict[str, Any]) -> str:
    """PSNR in dB; ``∞`` for identical logits (stored as null, with a zero max error)."""
    if a.get("psnr_db") is None and a.get("max_abs_err") == 0:
        return "∞"
    return fmt(a.get("psnr_db"), ".1f")


def _speed_ratio(ref_ms: float | None, ms: float | None) -> str:
    """``2.00× faster`` / ``1.30× slower`` than the reference, or ``–``."""
    if not ref_ms or not ms:
        return "–"
    return f"{ref_ms / ms:.2f}× faster" if ms <= ref_ms else f"{ms / ref_ms:.2f}× slower"


def _result_cell(a: dict[str, Any], not_run: str) -> str:
    """``pass`` / ``FAIL (why)`` / ``{not_run}why``."""
    if not a["runnable"]:
        result = not_run + (a.get("reason") or "")
    else:
        result = "pass" if a["passed"] else "FAIL"
    if a.get("failures"):
        result += " (" + "; ".join(a["failures"]) + ")"
    if (a.get("vs_host") or {}).get("reason"):
        result += f" ({a['vs_host']['reason']})"
    return result


def _runs_here(a: dict[str, Any]) -> str:
    """``yes``, ``no``, or ``emulated`` (an interpreter of the artifact stood in for its runtime)."""
    if not a["runnable"]:
        return "no"
    return "emulated" if (a.get("execution") or "").startswith("emulated (") else "yes"
