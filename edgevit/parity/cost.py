"""Cost profiles in parity reports, and latency gates that cannot flake.

On an emulated ARM device (``--device android-arm64``, or a device profile whose ``arm64_target`` is set up),
``edgevit parity`` also counts what each artifact executes per inference on the device's core
(:func:`edgevit.targets.cost.measure`: instructions, the arithmetic mix, an estimated cycle bound) and judges the
counts against the recipe's ``parity.cost`` tolerances (:class:`CostConfig`). A miss fails the artifact exactly
like an accuracy miss, and because the counts are deterministic the gate cannot flake: the same artifact gives
the same counts on every run and every host.

The gates:

- ``max_int8_vs_fp32``: an ``int8`` artifact may cost at most this fraction of the ``fp32`` artifact of the same
  backend (estimated cycles by default, ``metric``). An int8 export whose matmuls stayed float fails it.
- ``max_mcycles``: a budget in millions of estimated cycles per inference, per device name or core (e.g.
  ``{android-a55: 40, cortex-a76: 15}``), e.g. a frame budget: 33 ms at 2 GHz is 66 M cycles.

``parity-DEVICE.json`` gains (``schema_version`` stays 2; the keys are absent where nothing was counted)::

    "cost": {                       # top level: how the artifacts were counted and compared
      "cpu": str,                   # QEMU -cpu model the counts come from, e.g. "cortex-a76"
      "core": {...},                # that core's row of the cycle table (edgevit.targets.cost.CORES), with source
      "metric": "cycles" | "instructions",   # what the gates compare
      "config": {...},              # the CostConfig applied
      "ratios": [{"kind": "int8 vs fp32" | "backend vs backend", "a": str, "b": str,
                  "instructions": float, "cycles": float}],   # a's cost / b's, per inference
      "note": str,
      "calibration": {...}          # only with --calibrate: the ms fit (edgevit.parity.latency_fit.apply)
    }
    artifacts[i]["cost"]: {"cpu", "instructions", "mix": {class: count}, "mnemonics", "cycles": {"cycles",
        "bound_by", "by_resource", "core", "source"}, "libraries", "functions", "runs", "startup_instructions",
        "calibrated_ms" (only with --calibrate)}
        | null                      # null: not counted (not run here); see edgevit.targets.cost.profile
    artifacts[i]["failures"]: cost misses are listed as "cost: ..." beside accuracy misses

:func:`render_cost_markdown` renders the section for ``report-DEVICE.md``; :func:`cost_plot` and
:func:`render_cost_html` for ``report-DEVICE.html``.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgevit.backends import RunFailed
from edgevit.parity.latency_fit import LABEL, describe
from edgevit.targets.cost import CLASSES, core_table

NOTE = (
    "Instructions executed per inference in the runtime's real ARM64 kernels on QEMU's model of this core, one "
    "thread, counted exactly ((3 runs - 1 run) / 2). Estimated cycles: a throughput bound from the core's issue "
    "width and pipes (Arm's Software Optimization Guides), a first-order estimate for ratios on one core; neither "
    "is latency (no caches, dependency chains or clock)."
)


class CostConfig(BaseModel):
    """Cost tolerances on emulated ARM devices (the ``parity.cost`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="count each artifact on an emulated ARM device (one more emulated run each)"
    )
    metric: Literal["cycles", "instructions"] = Field("cycles", description="what the gates compare")
    max_int8_vs_fp32: float | None = Field(
        0.8,
        gt=0,
        description="an int8 artifact may cost at most this fraction of its backend's fp32 artifact (None: off)",
    )
    int8_precisions: list[str] = Field(
        default_factory=lambda: ["int8"], description="precisions judged by max_int8_vs_fp32"
    )
    max_mcycles: dict[str, float] = Field(
        default_factory=dict, description="device name or core (cortex-a76) -> budget, M estimated cycles/inference"
    )


def metric_value(cost: dict[str, Any], metric: str) -> float:
    """The compared number of one artifact's cost profile: estimated cycles or instructions per inference."""
    return cost["cycles"]["cycles"] if metric == "cycles" else cost["instructions"]


def judge_cost(entries: list[dict[str, Any]], config: CostConfig, device: str) -> dict[str, list[str]]:
    """The cost failures of each artifact (path -> messages; only failing ones), from the ``cost`` of ``entries``.

    ``device``: the device's name (budgets are looked up by it, then by the entry's core).
    """
    out: dict[str, list[str]] = {}
    unit = "M estimated cycles" if config.metric == "cycles" else "M instructions"
    fp32 = {e["backend"]: e for e in entries if e.get("cost") and e["precision"] == "fp32"}
    for e in entries:
        cost = e.get("cost")
        if not cost:
            continue
        msgs = []
        value = metric_value(cost, config.metric)
        budget = config.max_mcycles.get(device, config.max_mcycles.get(cost["cpu"]))
        if budget is not None and cost["cycles"]["cycles"] / 1e6 > budget:
            msgs.append(
                f"cost: {cost['cycles']['cycles'] / 1e6:.2f} M estimated cycles per inference > budget {budget:g} M "
                f"on {device} ({cost['cpu']})"
            )
        ref = fp32.get(e["backend"])
        if config.max_int8_vs_fp32 is not None and e["precision"] in config.int8_precisions and ref is not None:
            ratio = value / metric_value(ref["cost"], config.metric)
            if ratio > config.max_int8_vs_fp32:
                msgs.append(
                    f"cost: {e['precision']} costs {ratio:.2f}x the {e['backend']} fp32 artifact's {unit} "
                    f"({value / 1e6:.2f} M vs {metric_value(ref['cost'], config.metric) / 1e6:.2f} M) > "
                    f"{config.max_int8_vs_fp32:g} allowed"
                )
        if msgs:
            out[e["path"]] = msgs
    return out


def ratios(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-inference cost ratios between counted artifacts: each quantized precision vs fp32 of the same backend,
    then each pair of backends at the same precision (``a`` / ``b``: < 1 means ``a`` costs less)."""
    counted = [e for e in entries if e.get("cost")]
    out = []

    def row(kind: str, a: dict, b: dict) -> dict[str, Any]:
        return {
            "kind": kind,
            "a": f"{a['backend']} {a['precision']}",
            "b": f"{b['backend']} {b['precision']}",
            "instructions": a["cost"]["instructions"] / b["cost"]["instructions"],
            "cycles": a["cost"]["cycles"]["cycles"] / b["cost"]["cycles"]["cycles"],
        }

    for e in counted:
        ref = next((r for r in counted if r["backend"] == e["backend"] and r["precision"] == "fp32"), None)
        if ref is not None and e is not ref:
            out.append(row(f"{e['precision']} vs fp32", e, ref))
    for i, a in enumerate(counted):
        for b in counted[i + 1 :]:
            if a["precision"] == b["precision"] and a["backend"] != b["backend"]:
                out.append(row("backend vs backend", a, b))
    return out


def add_cost(report, artifacts, images_by_path: dict[str, Any], device, config: CostConfig, progress: bool) -> None:
    """Count every artifact that ran on ``device`` (one image each, ``images_by_path[path]`` in its layout), record
    each profile as its entry's ``cost``, add cost failures to its ``failures`` (and fail it), and set the report's
    top-level ``cost`` section. Does nothing when ``device`` cannot count or ``config.enabled`` is false.

    A runtime that crashes under the counting emulator fails its artifact (``cost: ...`` failure).
    """
    cpu = getattr(device, "cost_cpu", None)
    if not config.enabled or cpu is None:
        return
    by_path = {str(a.path): a for a in artifacts}
    for entry in report.artifacts:
        entry["cost"] = None
        art = by_path.get(entry["path"])
        if art is None or entry.get("top1") is None:  # not run here: nothing to count
            continue
        try:
            entry["cost"] = device.cost_profile(art, images_by_path[entry["path"]], progress)
        except RunFailed as e:
            entry["failures"] = [*entry["failures"], f"cost: counting run failed: {e}"]
            entry["passed"] = False
    failures = judge_cost(report.artifacts, config, report.device["name"])
    for entry in report.artifacts:
        if entry["path"] in failures:
            entry["failures"] = [*entry["failures"], *failures[entry["path"]]]
            entry["passed"] = False
    report.cost = {
        "cpu": cpu,
        "core": core_table().get(cpu),
        "metric": config.metric,
        "config": config.model_dump(),
        "ratios": ratios(report.artifacts),
        "note": NOTE,
    }


def _m(v: float | None) -> str:
    return "–" if v is None else f"{v / 1e6:.3f}"


def render_cost_markdown(doc: dict[str, Any]) -> str:
    """The cost section of ``report-DEVICE.md`` from a ``parity-DEVICE.json`` document ("" when nothing was
    counted): per artifact, instructions and estimated cycles per inference with the mix, then the ratios."""
    cost = doc.get("cost")
    rows = [a for a in doc.get("artifacts") or [] if a.get("cost")]
    if not cost or not rows:
        return ""
    core = cost.get("core") or {}
    cfg = cost.get("config") or {}
    calibrated = cost.get("calibration")
    header = ["backend", "precision", "M instructions", "M est. cycles", *(["calibrated ms"] if calibrated else [])]
    header += ["bound by", *(f"{c} M" for c in CLASSES)]
    lines = [
        f"## ARM cost profile ({cost['cpu']})",
        "",
        NOTE,
        f" Cycle table: {core.get('title', cost['cpu'])} (issue {core.get('issue')}/cycle, {core.get('simd')} "
        f"Q-form SIMD, {core.get('loads')} loads, {core.get('stores')} stores per cycle; {core.get('source', '?')}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for a in rows:
        c = a["cost"]
        cells = [a["backend"], a["precision"], _m(c["instructions"]), _m(c["cycles"]["cycles"])]
        cells += [f"{c['calibrated_ms']:.2f}"] if calibrated else []
        cells += [c["cycles"]["bound_by"], *(_m(c["mix"].get(k)) for k in CLASSES)]
        lines.append("| " + " | ".join(cells) + " |")
    if calibrated:
        lines += ["", f"{describe(calibrated)} {LABEL.capitalize()}."]
    gates = []
    if cfg.get("max_int8_vs_fp32") is not None:
        gates.append(
            f"{'/'.join(cfg.get('int8_precisions') or ['int8'])} ≤ {cfg['max_int8_vs_fp32']:g}× its backend's "
            f"fp32 {cfg.get('metric', 'cycles')}"
        )
    if cfg.get("max_mcycles"):
        gates.append("budgets " + ", ".join(f"{k}: {v:g} M cycles" for k, v in cfg["max_mcycles"].items()))
    lines += ["", "Cost gates (parity.cost): " + ("; ".join(gates) or "none") + ".", ""]
    if cost.get("ratios"):
        lines += ["| ratio | a | b | instructions a/b | est. cycles a/b |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['kind']} | {r['a']} | {r['b']} | {r['instructions']:.3f} | {r['cycles']:.3f} |"
            for r in cost["ratios"]
        ]
        lines.append("")
    top = []
    for a in rows:
        fns = a["cost"].get("functions") or []
        if fns:
            names = ", ".join(f"`{f['function']}` {f['instructions'] / 1e6:.3f} M" for f in fns[:3])
            top.append(f"- {a['backend']} {a['precision']} ({Path(str(a['path'])).name}): {names}")
    if top:
        lines += ["Costliest functions per inference (M instructions):", *top, ""]
    return "\n".join(lines)


def cost_plot(doc: dict[str, Any]):
    """Stacked horizontal bars: each counted artifact's instructions per inference by class, with its estimated
    cycles written beside it; None when nothing was counted."""
    rows = [a for a in doc.get("artifacts") or [] if a.get("cost")]
    if not rows:
        return None
    from matplotlib.figure import Figure  # noqa: PLC0415 -- optional package (edgevit[report])

    fig = Figure(figsize=(8, 0.5 * len(rows) + 1.6))
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    colors = ["#1f77b4", "#2ca02c", "#17becf", "#bcbd22", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]
    for cls, color in zip(CLASSES, colors, strict=True):
        vals = [a["cost"]["mix"].get(cls, 0) / 1e6 for a in rows]
        if any(vals):
            ax.barh(y, vals, left=left, color=color, label=cls)
            left = [lo + v for lo, v in zip(left, vals, strict=True)]
    for yi, a, end in zip(y, rows, left, strict=True):
        ax.text(end, yi, f"  {a['cost']['cycles']['cycles'] / 1e6:.2f} M cycles", va="center", fontsize=8)
    ax.set_yticks(y, [f"{a['backend']} {a['precision']}" for a in rows])
    ax.set_xlim(0, max(left) * 1.35)
    ax.set_xlabel("M instructions per inference (one thread)")
    ax.set_title(f"ARM cost on emulated {doc['cost']['cpu']}: instruction mix and estimated cycles")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def render_cost_html(doc: dict[str, Any]) -> str:
    """The cost section of ``report-DEVICE.html`` (a table and the ratios; the plot is :func:`cost_plot`)."""
    cost = doc.get("cost")
    rows = [a for a in doc.get("artifacts") or [] if a.get("cost")]
    if not cost or not rows:
        return ""
    calibrated = cost.get("calibration")
    ms_column = ["calibrated ms"] if calibrated else []
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in ["artifact", "M instructions", "M est. cycles", *ms_column, "bound by", *CLASSES]
    )
    body = []
    for a in rows:
        c = a["cost"]
        cells = [_m(c["instructions"]), _m(c["cycles"]["cycles"])]
        cells += [f"{c['calibrated_ms']:.2f}"] if calibrated else []
        cells += [escape(c["cycles"]["bound_by"])]
        cells += [_m(c["mix"].get(k)) for k in CLASSES]
        label = escape(f"{a['backend']} {a['precision']}")
        body.append(f'<tr><td class="text">{label}</td>' + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    out = [
        f"<h2>ARM cost profile ({escape(cost['cpu'])})</h2>",
        f'<p class="note">{escape(NOTE)}</p>',
        *([f'<p class="note">{escape(describe(calibrated))}</p>'] if calibrated else []),
        f'<table class="cost"><tr>{head}</tr>{"".join(body)}</table>',
    ]
    if cost.get("ratios"):
        out.append("<table><tr><th>ratio</th><th>a</th><th>b</th><th>instructions a/b</th><th>cycles a/b</th></tr>")
        out += [
            f'<tr><td class="text">{escape(r["kind"])}</td><td class="text">{escape(r["a"])}</td>'
            f'<td class="text">{escape(r["b"])}</td><td>{r["instructions"]:.3f}</td><td>{r["cycles"]:.3f}</td></tr>'
            for r in cost["ratios"]
        ]
        out.append("</table>")
    return "\n".join(out)


__all__ = ["CostConfig", "add_cost", "cost_plot", "judge_cost", "ratios", "render_cost_html", "render_cost_markdown"]
