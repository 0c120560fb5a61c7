"""``edgevit`` commands that run a recipe's stages on a run directory: train, quantize, export, parity, prune,
sparsify, compress-report, run."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from edgevit.cli.app import BackendName, Precision, _echo, app
from edgevit.utils import EdgeVitError, check_writable


@app.command("train")
def train_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create or resume."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.json."),
    qat: bool = typer.Option(
        False, "--qat", help="Then quantization-aware fine-tuning (recipe `qat:`) into OUT/qat/<backend>/."
    ),
) -> None:
    """Train the recipe's model; writes checkpoints/, metrics.csv and model.safetensors into OUT.

    With --qat, an OUT that already holds a trained model is not retrained: QAT fine-tunes it with RECIPE's `qat:`
    settings (RECIPE must name OUT's model and data) and each backend's QAT quantizer (the backends of its
    `method: qat` targets, default executorch);
    --resume then continues an interrupted QAT run. `edgevit export OUT` lowers the QAT graphs.

    Multi-process: `torchrun --nproc_per_node N -m edgevit.cli train RECIPE --out OUT` (DDP; train.batch_size
    is per process). Progress, img/s and LR show live; OUT/tb holds TensorBoard events.
    """
    from edgevit.recipe import Recipe, stage_qat, stage_train

    r = Recipe.load(recipe)
    check_writable(out, "run directory")
    if not (qat and (out / "model.safetensors").is_file()):
        main = os.environ.get("RANK", "0") == "0"  # under torchrun every process trains; rank 0 reports
        top1 = stage_train(r, out, resume=resume, progress=main)
        if main:
            ema = " (EMA weights)" if r.train.ema_decay else ""
            _echo(f"val top-1 {top1:.2f}%{ema}  model: {out / 'model.safetensors'}")
    if qat:
        for backend, top1 in stage_qat(out, resume=resume, recipe=r).items():
            _echo(f"QAT {backend}: val top-1 {top1:.2f}% (fake-quantized)  checkpoints: {out / 'qat' / backend}")


@app.command("quantize")
def quantize_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    backend: BackendName | None = typer.Option(None, "--backend", "-b", help="Only this backend (with --precision)."),
    precision: Precision | None = typer.Option(None, "--precision", "-p", help="e.g. int8, int8-dynamic, w4-lut."),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        min=0,
        help="Accuracy control: keep the most sensitive layers float until top-1 drops <= this.",
    ),
) -> None:
    """Post-training quantization with each backend's own quantizer, calibrated on training images.

    Exports the recipe's quantized targets into RUN_DIR/artifacts (or the one given by --backend and
    --precision) and records them in the manifest; `edgevit parity RUN_DIR` then measures what they keep.
    With --max-drop (or the recipe's quantize.max_drop) the per-layer sensitivity plan is written to
    RUN_DIR/artifacts/mixed_precision.json first and applied to every target.
    """
    from pydantic import ValidationError

    from edgevit.recipe import Target, load_run, stage_export

    if (backend is None) != (precision is None):
        raise EdgeVitError("give both --backend and --precision, or neither (all quantized targets of the recipe)")
    if backend is not None:
        try:
            targets = [Target(backend=backend.value, precision=precision.value)]
        except ValidationError as e:  # the message names the precisions the backend takes
            raise EdgeVitError(e.errors()[0]["msg"].removeprefix("Value error, ")) from e
    else:
        recipe = load_run(run_dir)
        targets = [t for t in recipe.export.targets if t.quantized]
        if not targets:
            raise EdgeVitError(f"{run_dir}/recipe.yaml has no quantized export targets; use --backend/--precision")
    for art in stage_export(run_dir, targets, max_drop=max_drop):
        _echo(f"{art.backend:>10} {art.precision}: {art.path} ({art.info.get('quantizer', '')})")


@app.command("export")
def export_cmd(
    run_dir: Path | None = typer.Argument(None, help="Export every target of this run's recipe."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Registry name, or a run directory / model.safetensors with its .json."
    ),
    weights: Path | None = typer.Option(None, "--weights", help="State dict (.safetensors/.pth) for --model NAME."),
    backend: BackendName | None = typer.Option(None, "--backend", "-b", help="Target runtime."),
    precision: Precision | None = typer.Option(None, "--precision", "-p", help="Default: the backend's float."),
    img_size: int | None = typer.Option(None, "--img-size", help="Input resolution (default: the model's)."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Head size for a registry name."),
    calib_dir: Path | None = typer.Option(
        None, "--calib-dir", help="ImageFolder to calibrate static int8 on (default: digits at the model's size)."
    ),
    calib_images: int = typer.Option(128, "--calib-images", help="Calibration images for int8."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file (.pte/.tflite/.mlpackage/.onnx)."),
) -> None:
    """Export a run's artifacts (RUN_DIR), or one model to one file (--model ... --backend ... --out ...).

    A registry name without --weights exports a randomly initialised model: a quick check that an
    architecture lowers to a backend.
    """
    if run_dir is not None:
        if model or backend or out:
            raise EdgeVitError("give either RUN_DIR or --model/--backend/--out, not both")
        from edgevit.recipe import stage_export

        for art in stage_export(run_dir):
            _echo(f"{art.backend:>10} {art.precision}: {art.path}")
        print_timings(run_dir)
        return
    if not (model and backend and out):
        raise EdgeVitError("export needs RUN_DIR, or all of --model, --backend and --out")
    from edgevit.backends import get_backend
    from edgevit.export import export
    from edgevit.models import create_model, load_model
    from edgevit.quantize import CALIBRATED_PRECISIONS

    b = get_backend(backend.value)
    prec = precision.value if precision else b.default_precision
    if prec not in b.precisions:
        raise EdgeVitError(f"{b.name} exports {', '.join(b.precisions)}, not {prec!r}")
    if out.suffix != b.suffix:
        raise EdgeVitError(f"{b.name} artifacts end in {b.suffix}; got --out {out}")
    check_writable(out, "--out")
    if Path(model).exists():
        net, meta = load_model(model)
        mean, std = meta.get("mean"), meta.get("std")
        size = meta["args"].get("img_size")
        if img_size and img_size != size:
            raise EdgeVitError(f"{model} was trained at img_size {size}; --img-size {img_size} does not match")
    else:
        args = {k: v for k, v in {"img_size": img_size, "num_classes": num_classes}.items() if v is not None}
        net = create_model(model, weights=weights, **args).eval()
        mean, std = net.default_cfg["mean"], net.default_cfg["std"]
    c, h, w = net.default_cfg["input_size"]
    example = _calibration(calib_dir, h, mean, std, 1)
    calib = _calibration(calib_dir, h, mean, std, calib_images) if prec in CALIBRATED_PRECISIONS else None
    art = export(net, example, backend.value, out, prec, calib=calib)
    _echo(f"{art.backend} {art.precision}: {art.path}")
    for key, value in art.info.items():
        _echo(f"  {key}: {value}")


def _calibration(calib_dir: Path | None, size: int, mean, std, n: int):
    """``n`` images at ``size`` px: from an ImageFolder if given, else from digits (real data, shipped)."""
    from edgevit.data import calibration_batch, digits, imagefolder

    data = imagefolder(calib_dir, size, mean=mean, std=std, augment=False) if calib_dir else None
    data = data or digits(size, mean=mean, std=std)
    return calibration_batch(data.train, n)


@app.command("parity")
def parity_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory with artifacts/manifest.json."),
    device: str = typer.Option(
        "host",
        help="Where artifacts run: host, an emulated target, a device profile (android-midrange, iphone, "
        "raspberry-pi) or a profile .yaml; `edgevit target list` shows them.",
    ),
    cache: Path | None = typer.Option(None, help="The emulated target's cache (default: as `edgevit target setup`)."),
    explain: bool | None = typer.Option(
        None,
        "--explain/--no-explain",
        help="Find the first layer that diverges from PyTorch: for every artifact (--explain); default: failing ones.",
    ),
    calibrate: Path | None = typer.Option(
        None,
        help="A CSV of real-device timings (artifact,ms[,mcycles][,core]) that turns the cost profile's estimated "
        "cycles into labelled milliseconds (needs a --device that counts).",
    ),
) -> None:
    """Re-check every artifact of RUN_DIR against its PyTorch model on the whole validation split.

    Writes parity.json and report.md (parity-DEVICE.json and report-DEVICE.md for --device); exits 1 when any
    artifact misses its tolerance (use it as a CI gate). On an emulated device each artifact is also compared with
    its own host run, and latency is not measured. A device profile runs the artifacts that device uses, the way it
    runs them (threads, 8-bit input), and the report says which parts were real and which emulated.
    """
    from edgevit.recipe import stage_parity

    report, md = stage_parity(run_dir, device=device, cache=cache, explain=explain, calibrate=calibrate)
    print_summary(report, md)
    print_explained(report)
    if not report.passed:
        raise typer.Exit(1)


@app.command("prune")
def prune_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    out: Path = typer.Option(..., "--out", "-o", help="The new run directory for the pruned model."),
    ratio: float | None = typer.Option(None, "--ratio", min=0.0, max=1.0, help="Fraction of channels/heads to remove."),
    importance: str | None = typer.Option(None, "--importance", help="magnitude or taylor."),
    global_pruning: bool | None = typer.Option(None, "--global/--per-layer", help="Rank all layers together."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Recovery fine-tuning epochs (recipe: recover)."),
    resume: bool = typer.Option(False, "--resume", help="Resume recovery from OUT's last checkpoint."),
) -> None:
    """Structured pruning (whole heads, MLP hidden units, conv channels) + recovery fine-tuning into a new run.

    Settings come from the recipe's `prune:` and `recover:` sections; options override them. Then
    `edgevit export OUT`, `edgevit parity OUT` and `edgevit compress-report RUN_DIR OUT`.
    """
    from edgevit.recipe import load_run, stage_prune

    recipe = load_run(run_dir)
    check_writable(out, "--out")
    cfg = _override(recipe.prune, ratio=ratio, importance=importance, global_pruning=global_pruning)
    s = stage_prune(run_dir, out, cfg, resume=resume, epochs=epochs)
    heads = ", ".join(f"{k}: {a}->{b}" for k, (a, b) in list(s["heads"].items())[:4])
    _echo(
        f"params {s['params_before'] / 1e6:.3f}M -> {s['params_after'] / 1e6:.3f}M ({s['param_ratio']:.2f}x), "
        f"MACs {s['macs_before'] / 1e6:.1f}M -> {s['macs_after'] / 1e6:.1f}M ({s['mac_ratio']:.2f}x)"
        + (f"; heads {heads}" if heads else "")
    )
    _echo(f"val top-1 {s['source_val_top1']:.2f}% -> {s['val_top1']:.2f}% after recovery  model: {out}")


@app.command("sparsify")
def sparsify_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    out: Path = typer.Option(..., "--out", "-o", help="The new run directory for the sparse model."),
    sparsity: float | None = typer.Option(None, "--sparsity", min=0.0, max=1.0, help="Fraction of weights zeroed."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs with the masks held."),
    resume: bool = typer.Option(False, "--resume", help="Resume fine-tuning from OUT's last checkpoint."),
) -> None:
    """Unstructured magnitude sparsity + fine-tuning into a new run. Shrinks Core ML files (sparse weights);
    dense runtimes (XNNPACK, LiteRT, ONNX Runtime) run it no faster."""
    from edgevit.recipe import load_run, stage_sparsify

    recipe = load_run(run_dir)
    check_writable(out, "--out")
    cfg = _override(recipe.sparsify, sparsity=sparsity)
    s = stage_sparsify(run_dir, out, cfg, resume=resume, epochs=epochs)
    _echo(f"sparsity {s['sparsity']:.3f}; val top-1 {s['source_val_top1']:.2f}% -> {s['val_top1']:.2f}%  model: {out}")


def _override(cfg, **values):
    """``cfg`` with the options the user gave (not None); invalid values are one-line errors."""
    from pydantic import ValidationError

    given = {k: v for k, v in values.items() if v is not None}
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **given})
    except ValidationError as e:
        err = e.errors()[0]
        raise EdgeVitError(f"--{'-'.join(str(p) for p in err['loc'])}: {err['msg']}") from e


@app.command("compress-report")
def compress_report_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories with parity.json; the first is the baseline."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write (default: the first run directory)."),
    threads: int = typer.Option(2, "--threads", min=1),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed runs per artifact (in 5 rounds)."),
) -> None:
    """Variants (baseline, pruned, QAT ... runs) × backend × precision: top-1, drop, agreement, size, latency.

    Latency is re-measured for all artifacts side by side in one process (blocks per artifact, in rounds).
    Writes compress_report.md (table, Pareto set) and compress_report.png (top-1 vs latency, area = file size).
    """
    from edgevit.parity.compress import compress_report

    check_writable(out if out else run_dirs[0], "--out")
    md, png, rows = compress_report(run_dirs, out, threads=threads, runs=runs)
    for r in rows:
        star = "*" if r["pareto"] else " "
        lat = "not run" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ms"
        top1 = "–" if r["top1"] is None else f"{r['top1']:.2f}%"
        _echo(f"{star} {r['variant']:>12} {r['name']:<24} {top1:>7} {lat:>10} {r['size_bytes'] / 1024:8.0f} KiB")
    _echo(f"report: {md}\nplot: {png}")


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/quickstart.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Resume training from OUT's last checkpoint."),
) -> None:
    """train -> quantize + export (each backend's own quantizer) -> parity, into OUT. Exits 1 if parity fails."""
    from edgevit.recipe import Recipe, run

    r = Recipe.load(recipe)
    check_writable(out, "run directory")
    report, md = run(r, out, resume=resume)
    print_summary(report, md)
    print_timings(out)
    if not report.passed:
        raise typer.Exit(1)


def print_timings(run_dir: Path) -> None:
    """Print the run's stage timing table (``RUN/timings.json``)."""
    from rich.console import Console

    from edgevit.recipe.timings import read_timings, table

    rows = read_timings(run_dir)
    if rows:
        Console(stderr=True).print(table(rows, title=f"where the time went ({run_dir / 'timings.json'})"))


def print_summary(report, md: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgevit.parity import report_names

    ref, dev = report.reference, report.device
    emulated = dev.get("emulated", False)
    where = "" if dev["name"] == "host" else f"on {dev['name']}{' (emulated)' if emulated else ''}, "
    table = Table(title=f"parity {where}vs PyTorch fp32 (top-1 {ref['top1']:.2f}%, {report.num_images} val images)")
    last = ("ARM64 vs x86 max abs", "result") if emulated else ("latency ms", "result")
    for col in ("backend", "precision", "top-1 %", "agreement", "max abs err", *last):
        table.add_column(col)

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for a in report.artifacts:
        if not a["runnable"]:
            table.add_row(a["backend"], a["precision"], "–", "–", "–", "–", "not run here (see report)")
            continue
        result = "[green]pass[/green]" if a["passed"] else "[red]FAIL[/red] " + "; ".join(a["failures"])[:300]
        extra = (a.get("vs_host") or {}).get("max_abs_err") if emulated else (a["latency_ms"] or {}).get("median")
        table.add_row(
            a["backend"],
            a["precision"],
            f(a["top1"], ".2f"),
            f(a["agreement"], ".4f"),
            f(a["max_abs_err"], ".2e"),
            f(extra, ".2e" if emulated else ".3f"),
            result,
        )
    Console(stderr=True).print(table)
    _echo(f"report: {md}  (and {md.with_name(report_names(dev['name'])[0])})")


def print_explained(report) -> None:
    """Print each ``explain`` entry: the per-layer error table and which layer diverges first."""
    from rich.console import Console

    from edgevit.parity.explain import summary, table

    console = Console(stderr=True)
    console.width = max(console.width, 110)  # the per-layer table needs ~100 columns; piped output defaults to 80
    for a in report.artifacts:
        e, name = a.get("explain"), f"{a['backend']} {a['precision']}"
        if a.get("explain_error"):
            _echo(f"explain {name}: could not trace it: {a['explain_error']}")
        if not e:
            continue
        console.print(table(e, title=f"explain {name}: rel L2 vs PyTorch per module ({e['images']} images)"))
        _echo(f"explain {name}: {summary(e)}")
