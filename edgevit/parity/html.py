"""``report.html``: the parity report as one self-contained page (no server, no network, no JavaScript).

``render_html(doc)`` turns a ``parity.json`` document into HTML: a summary (pass/fail, device, which parts are
emulated), the artifact table, and plots drawn with matplotlib (Agg backend, imported lazily) and inlined as
base64 PNG: latency per backend (median with p90 whiskers, ratio vs PyTorch), accuracy vs size, and the
per-layer error curve of every artifact with an ``explain`` section. ``write_html(doc, path)`` writes it
atomically. Every field may be missing or null (older ``parity.json`` files, artifacts that did not run); the
page shows "–" for those. Without matplotlib (the ``[report]`` extra) the page is written without plots and says
so.

Why one file over ~450 lines: one renderer of one page; its summary, table and three plots share the same
formatting helpers and CSS.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

from edgevit.parity.cost import cost_plot, render_cost_html
from edgevit.utils import write_text_atomic

PASS_COLOR, FAIL_COLOR, NOT_RUN_COLOR, REF_COLOR = "#2ca02c", "#d62728", "#7f7f7f", "#1f77b4"
ROW_FAIL = ' class="row-fail"'

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; }
.verdict { display: inline-block; padding: 4px 14px; border-radius: 4px; color: #fff; font-weight: 700; }
.pass { background: #2ca02c; } .fail { background: #d62728; } .notrun { background: #7f7f7f; }
table { border-collapse: collapse; font-size: 13px; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td.text { text-align: left; white-space: normal; max-width: 260px; }
tr.row-fail td { background: #fde8e8; } tr.row-notrun td { color: #777; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
figcaption { font-size: 13px; color: #555; max-width: 640px; }
.note { font-size: 13px; color: #555; max-width: 1100px; }
"""


def _get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or None when any level is missing or null."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _fmt(v: Any, spec: str) -> str:
    """``format(v, spec)``, or an en dash for a missing value."""
    if v is None:
        return "–"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return escape(str(v))


def _status(a: dict[str, Any]) -> str:
    """``pass``, ``fail`` or ``notrun`` for one artifact entry."""
    if a.get("passed") is False:
        return "fail"
    if a.get("passed") is True:
        return "pass"
    return "notrun"


def _label(a: dict[str, Any]) -> str:
    """``backend precision`` (plus the quantizer's first word when it is not the backend's plain one)."""
    name = f"{a.get('backend', '?')} {a.get('precision', '?')}"
    q = a.get("quantizer") or ""
    return name + (" (NNCF)" if "NNCF" in q else "") + (" (QAT)" if "qat" in str(a.get("path", "")).lower() else "")


def _named(a: dict[str, Any]) -> str:
    """:func:`_label` and the file name."""
    return f"{_label(a)} [{Path(str(a.get('path', '?'))).name}]"


def _plot_labels(artifacts: list[dict[str, Any]]) -> list[str]:
    """:func:`_label` per artifact, with the file name added where two artifacts would read the same."""
    labels = [_label(a) for a in artifacts]
    return [
        f"{lab} [{Path(str(a.get('path', '?'))).name}]" if labels.count(lab) > 1 else lab
        for lab, a in zip(labels, artifacts, strict=True)
    ]


def _execution(a: dict[str, Any]) -> str:
    """Where the numbers came from: ``native``, ``emulated ...``, or ``not run``."""
    if a.get("runnable") is False:
        return "not run"
    return a.get("execution") or "native"


def _ratio(ref_ms: float | None, ms: float | None) -> str:
    """``2.10× faster`` / ``1.30× slower`` than the reference, or an en dash."""
    if not ref_ms or not ms:
        return "–"
    return f"{ref_ms / ms:.2f}× faster" if ms <= ref_ms else f"{ms / ref_ms:.2f}× slower"


def _summary(doc: dict[str, Any]) -> str:
    """The verdict, the reference model, the device and its real/emulated parts."""
    dev, ref = doc.get("device") or {}, doc.get("reference") or {}
    passed = doc.get("passed")
    verdict = "PASS" if passed else ("FAIL" if passed is False else "UNKNOWN")
    counts = {s: sum(_status(a) == s for a in doc.get("artifacts") or []) for s in ("pass", "fail", "notrun")}
    out = [
        f'<p><span class="verdict {"pass" if passed else "fail"}" id="verdict">{verdict}</span> '
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['notrun']} not run here.</p>",
        "<ul>",
        f"<li>{_fmt(doc.get('num_images'), 'd')} validation images, batch 1, {_fmt(doc.get('threads'), 'd')} threads; "
        f"schema version {escape(str(doc.get('schema_version', '–')))}.</li>",
        f"<li>Reference: PyTorch {escape(str(ref.get('precision', 'fp32')))}, top-1 {_fmt(ref.get('top1'), '.2f')}%, "
        f"top-5 {_fmt(ref.get('top5'), '.2f')}%, latency median {_fmt(_get(ref, 'latency_ms', 'median'), '.3f')} ms "
        f"(p90 {_fmt(_get(ref, 'latency_ms', 'p90'), '.3f')} ms).</li>",
        f"<li>Device: <b>{escape(str(dev.get('name', 'host')))}</b>"
        + (f" — {escape(str(dev['description']))}" if dev.get("description") else "")
        + (" (emulated)" if dev.get("emulated") else "")
        + ".</li>",
    ]
    if dev.get("note"):
        out.append(f"<li>{escape(str(dev['note']))}</li>")
    profile = dev.get("profile")
    if isinstance(profile, dict) and profile:
        items = ", ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in profile.items())
        out.append(f"<li>Device profile: {items}</li>")
    out.append("</ul>")
    parts = dev.get("parts") or []
    emulated_rows = sorted(
        {
            f"{a.get('backend')}: {a.get('execution')}"
            for a in doc.get("artifacts") or []
            if str(a.get("execution") or "").startswith("emulated")
        }
    )
    if parts or emulated_rows:
        out += [
            "<h3>What is real and what is emulated</h3>",
            '<table id="parts"><tr><th>part</th><th>how</th><th>note</th></tr>',
        ]
        for p in parts:
            out.append(
                f'<tr><td class="text">{escape(str(p.get("what", "")))}</td><td class="text">'
                f'{escape(str(p.get("how", "")))}</td><td class="text">{escape(str(p.get("note", "")))}</td></tr>'
            )
        for row in emulated_rows:
            backend, _, how = row.partition(": ")
            out.append(
                f'<tr><td class="text">{escape(backend)} artifacts</td><td class="text">emulated</td>'
                f'<td class="text">{escape(how)}; no latency is reported for them</td></tr>'
            )
        out.append("</table>")
    return "\n".join(out)


_COLUMNS = [
    "backend", "precision", "quantizer", "execution", "top-1 %", "top-5 %", "agreement", "cosine", "max abs err",
    "mean abs err", "PSNR dB", "KL nats", "latency median ms", "p90 ms", "vs PyTorch", "size KiB", "peak memory MB",
    "result",
]  # fmt: skip


def _table(doc: dict[str, Any]) -> str:
    """One row per artifact (never dropped: rows that did not run say why)."""
    ref_ms = _get(doc, "reference", "latency_ms", "median")
    with_host = any(a.get("vs_host") for a in doc.get("artifacts") or [])
    cols = _COLUMNS[:-1] + (["vs host: agreement", "vs host: max abs diff"] if with_host else []) + ["result"]
    rows = ['<table id="artifacts">', "<tr>" + "".join(f"<th>{escape(c)}</th>" for c in cols) + "</tr>"]
    ref = doc.get("reference") or {}
    rows.append(
        '<tr class="row-ref"><td class="text">pytorch</td><td class="text">'
        f'{escape(str(ref.get("precision", "fp32")))}</td><td class="text">–</td><td class="text">reference</td>'
        f"<td>{_fmt(ref.get('top1'), '.2f')}</td><td>{_fmt(ref.get('top5'), '.2f')}</td>"
        + "<td>–</td>" * 6
        + f"<td>{_fmt(ref_ms, '.3f')}</td><td>{_fmt(_get(ref, 'latency_ms', 'p90'), '.3f')}</td><td>1.00×</td>"
        + "<td>–</td><td>–</td>"
        + ("<td>–</td><td>–</td>" if with_host else "")
        + '<td class="text">reference</td></tr>'
    )
    for a in doc.get("artifacts") or []:
        status = _status(a)
        lat = a.get("latency_ms") or {}
        size = a.get("size_bytes")
        if a.get("runnable") is False:
            result = "not run: " + str(a.get("reason") or "")
        else:
            result = {"pass": "pass", "fail": "FAIL", "notrun": "–"}[status]
        if a.get("failures"):
            result += " (" + "; ".join(map(str, a["failures"])) + ")"
        cells = [
            f'<td class="text">{escape(str(a.get("backend", "")))}</td>',
            f'<td class="text">{escape(str(a.get("precision", "")))}</td>',
            f'<td class="text">{escape(str(a.get("quantizer") or "–"))}</td>',
            f'<td class="text" title="{escape(_execution(a))}">{escape(_execution(a).split(" (")[0])}</td>',
            f"<td>{_fmt(a.get('top1'), '.2f')}</td>",
            f"<td>{_fmt(a.get('top5'), '.2f')}</td>",
            f"<td>{_fmt(a.get('agreement'), '.4f')}</td>",
            f"<td>{_fmt(a.get('cosine'), '.6f')}</td>",
            f"<td>{_fmt(a.get('max_abs_err'), '.2e')}</td>",
            f"<td>{_fmt(a.get('mean_abs_err'), '.2e')}</td>",
            f"<td>{_fmt(a.get('psnr_db'), '.1f')}</td>",
            f"<td>{_fmt(a.get('kl_div'), '.2e')}</td>",
            f"<td>{_fmt(lat.get('median'), '.3f')}</td>",
            f"<td>{_fmt(lat.get('p90'), '.3f')}</td>",
            f"<td>{_ratio(ref_ms, lat.get('median'))}</td>",
            f"<td>{_fmt(size / 1024 if size is not None else None, '.0f')}</td>",
            f"<td>{_fmt(a.get('peak_memory_mb'), '.1f')}</td>",
        ]
        if with_host:
            host = a.get("vs_host") or {}
            cells += [
                f"<td>{_fmt(host.get('agreement'), '.4f')}</td>",
                f"<td>{_fmt(host.get('max_abs_err'), '.2e')}</td>",
            ]
        cells.append(f'<td class="text">{escape(result)}</td>')
        rows.append(f'<tr class="artifact row-{status}">' + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _png(fig) -> str:
    """The figure as a base64 PNG string (a plain ``Figure`` prints through Agg; no pyplot state involved)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _latency_plot(doc: dict[str, Any]):
    """Horizontal bars: median latency per artifact (and the reference), p90 whiskers, ratio vs PyTorch."""
    from matplotlib.figure import Figure  # noqa: PLC0415 -- optional package (edgevit[report])

    ref_lat = _get(doc, "reference", "latency_ms") or {}
    rows = [("pytorch fp32 (reference)", ref_lat, REF_COLOR)] if ref_lat.get("median") else []
    arts = doc.get("artifacts") or []
    for a, label in zip(arts, _plot_labels(arts), strict=True):
        lat = a.get("latency_ms") or {}
        if lat.get("median") is not None:
            rows.append((label, lat, PASS_COLOR if _status(a) == "pass" else FAIL_COLOR))
    if not rows:
        return None
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    med = [r[1]["median"] for r in rows]
    p90 = [max(r[1].get("p90") or r[1]["median"], r[1]["median"]) for r in rows]
    whiskers = [[0.0] * len(rows), [p - m for p, m in zip(p90, med, strict=True)]]  # [2, rows]: below, above
    ax.barh(y, med, color=[r[2] for r in rows], xerr=whiskers, capsize=4, error_kw={"ecolor": "#333"})
    ax.set_yticks(y, [r[0] for r in rows])
    ref_ms = ref_lat.get("median")
    for yi, m, p in zip(y, med, p90, strict=True):
        if ref_ms:
            ax.text(p, yi, f"  {_ratio(ref_ms, m) if m != ref_ms else '1.00×'}", va="center", fontsize=8)
    ax.set_xlabel("latency per image, ms (bar: median, whisker: p90)")
    if max(p90) / max(min(med), 1e-9) > 30:  # one slow row would flatten the others to nothing
        ax.set_xscale("log")
        ax.set_xlim(min(med) / 2, max(p90) * 4)
        ax.set_xlabel("latency per image, ms, log scale (bar: median, whisker: p90)")
    else:
        ax.set_xlim(0, max(p90) * 1.35)
    ax.set_title("Latency per backend (host runtime)")
    return fig


def _accuracy_size_plot(doc: dict[str, Any]):
    """Scatter: top-1 % vs artifact size; passing artifacts as green dots, failing ones as red crosses."""
    from matplotlib.figure import Figure  # noqa: PLC0415 -- optional package (edgevit[report])

    arts = doc.get("artifacts") or []
    pts = [(a, lab) for a, lab in zip(arts, _plot_labels(arts), strict=True) if a.get("top1") is not None]
    pts = [(a, lab) for a, lab in pts if a.get("size_bytes")]
    if not pts:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for i, (a, label) in enumerate(sorted(pts, key=lambda p: (p[0]["size_bytes"], p[0]["top1"]))):
        ok = _status(a) == "pass"
        x = a["size_bytes"] / 2**20
        ax.scatter(x, a["top1"], marker="o" if ok else "X", s=60, color=PASS_COLOR if ok else FAIL_COLOR, zorder=3)
        # artifacts of one size class sit on top of each other: stagger their labels downwards
        ax.annotate(label, (x, a["top1"]), textcoords="offset points", xytext=(6, 6 - 11 * (i % 4)), fontsize=8)
    ref_top1 = _get(doc, "reference", "top1")
    if ref_top1 is not None:
        ax.axhline(ref_top1, color=REF_COLOR, linestyle="--", linewidth=1, label=f"PyTorch fp32 {ref_top1:.2f}%")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("artifact size, MiB")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title("Accuracy vs size")
    ax.grid(alpha=0.3)
    return fig


def _explain_plot(a: dict[str, Any]):
    """Per-layer relative error vs PyTorch in network order, the tolerance, and the first divergent layer."""
    from matplotlib.figure import Figure  # noqa: PLC0415 -- optional package (edgevit[report])

    ex = a.get("explain") or {}
    layers = [layer for layer in ex.get("layers") or [] if layer.get("rel_err") is not None]
    if not layers:
        return None
    fig = Figure(figsize=(max(7, 0.35 * len(layers) + 2), 4.5))
    ax = fig.subplots()
    x = list(range(len(layers)))
    err = [max(float(layer["rel_err"]), 1e-12) for layer in layers]
    ax.plot(x, err, marker="o", color=REF_COLOR, label=f"{ex.get('metric') or 'relative error'} vs PyTorch")
    if ex.get("tolerance") is not None:
        ax.axhline(
            ex["tolerance"], color=FAIL_COLOR, linestyle="--", linewidth=1, label=f"tolerance {ex['tolerance']:g}"
        )
    quiet = [i for i, layer in enumerate(layers) if layer.get("carried") is False]
    if quiet:  # over tolerance, but the next layer does not carry the error on (not a cause)
        ax.scatter(quiet, [err[i] for i in quiet], s=60, color=NOT_RUN_COLOR, zorder=3, label="over, not carried on")
    first = ex.get("first_divergent") or {}
    idx = next((i for i, layer in enumerate(layers) if first and layer.get("module") == first.get("module")), None)
    if idx is not None:
        ax.scatter([idx], [err[idx]], s=160, facecolors="none", edgecolors=FAIL_COLOR, linewidths=2, zorder=4,
                   label=f"first divergent: {first.get('module')}")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(x, [str(layer.get("module", "?")) for layer in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("relative error (log)")
    ax.set_title(f"Per-layer error: {_named(a)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _plots(doc: dict[str, Any]) -> str:
    """The ``<figure>`` elements; a note instead when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415 -- optional package (edgevit[report])
    except ImportError:
        return '<p class="note" id="no-plots">Plots need matplotlib: <code>pip install \'edgevit[report]\'</code>.</p>'
    plots = [
        ("latency", lambda: _latency_plot(doc), "Latency per image at batch 1: median (bar) and p90 (whisker), and the "
         "ratio to PyTorch eager measured in the same run. Emulated and not-run artifacts have no latency."),
        ("accuracy-size", lambda: _accuracy_size_plot(doc), "Top-1 accuracy on the validation split vs file size; "
         "the dashed line is the PyTorch fp32 reference. Red crosses missed their tolerance."),
        ("cost", lambda: cost_plot(doc), "ARM cost per inference on the emulated core: instructions by class "
         "(one thread, counted exactly) and the estimated cycle bound; not latency."),
    ]  # fmt: skip
    for i, a in enumerate(doc.get("artifacts") or []):
        if a.get("explain"):
            first = _get(a, "explain", "first_divergent")
            where = (
                f"first divergent layer: {first.get('module')} ({first.get('op')})" if first else "no layer diverged"
            )
            plots.append(
                (
                    f"explain-{i}",
                    lambda a=a: _explain_plot(a),
                    f"Error growth along the network for {_named(a)}; {where}.",
                )
            )
    out = []
    with matplotlib.rc_context({"font.size": 9}):
        for key, draw, caption in plots:
            fig = draw()
            if fig is None:
                continue
            out.append(
                f'<figure class="plot" id="plot-{escape(key)}"><img alt="{escape(key)} plot" '
                f'src="data:image/png;base64,{_png(fig)}"><figcaption>{escape(caption)}</figcaption></figure>'
            )
    return "\n".join(out) or '<p class="note">No plottable numbers (nothing ran here).</p>'


def _explain_tables(doc: dict[str, Any]) -> str:
    """Each explained artifact's per-layer numbers (what the error-curve plot shows)."""
    out = []
    for a in doc.get("artifacts") or []:
        ex = a.get("explain")
        if not ex:
            continue
        first = ex.get("first_divergent") or {}
        out.append(
            f"<h3>Divergence: {escape(_named(a))}</h3><p>"
            + (
                f"First layer beyond tolerance {escape(_fmt(ex.get('tolerance'), 'g'))}: "
                f"<b>{escape(str(first.get('module')))}</b> ({escape(str(first.get('op')))}), "
                f"{escape(str(ex.get('metric') or 'rel_l2'))} {_fmt(first.get('rel_err'), '.2e')}."
                if first
                else "No layer exceeded the tolerance."
            )
            + "</p>"
            + (f'<p class="note">{escape(str(ex["note"]))}</p>' if ex.get("note") else "")
            + (
                f'<p class="note">Compared over {escape(str(ex["images"]))} images.'
                + (
                    f" Modules with no artifact tensor: {escape(', '.join(map(str, ex['unmapped'])))}."
                    if ex.get("unmapped")
                    else ""
                )
                + "</p>"
                if ex.get("images") or ex.get("unmapped")
                else ""
            )
            + '<table class="explain"><tr><th>#</th><th>module</th><th>op</th><th>rel err</th>'
            "<th>max abs err</th><th></th></tr>"
        )
        tol = ex.get("tolerance")
        for j, layer in enumerate(ex.get("layers") or []):
            is_first = bool(first) and layer.get("module") == first.get("module")
            err = layer.get("rel_err")
            if is_first:
                flag = "first divergent"
            elif layer.get("carried") is False:
                flag = "over, not carried on"  # e.g. LiteRT's LayerNorm output before its folded affine
            else:
                flag = "over" if tol is not None and err is not None and err > tol else ""
            out.append(
                f"<tr{ROW_FAIL if is_first else ''}><td>{j}</td>"
                f'<td class="text">{escape(str(layer.get("module", "")))}</td>'
                f'<td class="text">{escape(str(layer.get("op", "")))}</td><td>{_fmt(err, ".2e")}</td>'
                f'<td>{_fmt(layer.get("max_abs_err"), ".2e")}</td><td class="text">{flag}</td></tr>'
            )
        out.append("</table>")
    return "\n".join(out)


def render_html(doc: dict[str, Any], title: str = "Parity report") -> str:
    """A self-contained HTML page for a ``parity.json`` document.

    Args:
        doc: the document (:meth:`edgevit.parity.ParityReport.to_json`, or a ``parity.json`` read back);
            missing or null fields are shown as "–".
        title: the page title.

    Returns:
        The HTML text: summary, artifact table, inline PNG plots, per-layer tables. All text is escaped.
    """
    dev_name = _get(doc, "device", "name")
    if dev_name and dev_name != "host":
        title = f"{title}: {dev_name}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            _summary(doc),
            "<h2>Artifacts</h2>",
            _table(doc),
            '<p class="note">Agreement: fraction of images whose top-1 class equals PyTorch fp32\'s. Cosine: mean '
            "logit-vector cosine similarity. PSNR: logits vs the reference's, peak = reference logit range. KL: mean "
            "KL(softmax(reference) ‖ softmax(artifact)). Latency is host latency of the runtime named, not phone "
            "latency.</p>",
            "<h2>Plots</h2>",
            _plots(doc),
            render_cost_html(doc),
            _explain_tables(doc),
            "</body></html>",
            "",
        ]
    )


def write_html(doc: dict[str, Any], path: str | Path) -> Path:
    """Render ``doc`` (a ``parity.json`` document) and write it to ``path`` atomically; return the path."""
    return write_text_atomic(path, render_html(doc))


__all__ = ["render_html", "write_html"]
