"""``edgevit`` command line: each verb reads and writes files in a run directory.

edgevit run recipes/quickstart.yaml --out runs/quickstart     # train -> quantize -> export -> parity
edgevit train RECIPE --out RUN ; edgevit export RUN ; edgevit parity RUN   (quantize RUN: int8 targets only)
edgevit export --model vit_tiny_patch16 --backend executorch --out vit.pte   # one artifact, scriptable
edgevit models 'vit_*'
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path

import typer

from edgevit._utils import EdgeVitError, check_writable
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


@app.command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'vit_*'."),
    img_size: int | None = typer.Option(None, "--img-size", help="Count MACs at this resolution (default: native)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: params, backbone params, MACs, FLOPs."),
) -> None:
    """List registered models with parameters (full with a 1000-class head, and backbone) and MACs.

    Backbone parameters exclude the classifier head(s) and class/distillation tokens (the Scaling-ViT
    convention). FLOPs = 2 x MACs over convs, linears and attention matmuls. Models are built on the meta
    device, so even ViT-G/14 is instant.
    """
    import torch

    from edgevit.models import create_model, list_models
    from edgevit.models.profile import profile

    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):
            model = create_model(name, **({"img_size": img_size} if img_size else {}))
        rows.append({"name": name, **profile(model)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "params", "backbone", "input", "MACs")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['backbone_params'] / 1e6:.2f}M",
            "x".join(map(str, r["input_size"][1:])),
            f"{r['macs'] / 1e9:.3f}G",
        )
    Console().print(table)


@app.command("bench")
def bench_cmd(
    models: list[str] = typer.Argument(..., help="Registry names, e.g. vit_tiny_patch16 deit_small."),
    img_size: int | None = typer.Option(None, "--img-size", help="Resolution (default: each model's native)."),
    threads: int = typer.Option(2, "--threads", help="Threads for every runtime."),
    runs: int = typer.Option(20, "--runs", help="Timed batch-1 runs per backend (after --warmup)."),
    warmup: int = typer.Option(5, "--warmup"),
    precision: list[Precision] = typer.Option(
        ["fp32"], "--precision", "-p", help="Repeatable: fp32 (each backend's float), int8, int8-dynamic, ..."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the results as JSON here."),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Count instead of time, on an emulated ARM core: android-arm64, or a profile with an arm64_target "
        "(android-a55, android-a76, android-a710, raspberry-pi); ExecuTorch, LiteRT, ONNX Runtime side by side.",
    ),
    keep: Path | None = typer.Option(None, "--keep", help="With --device: keep (and reuse) the artifacts here."),
    export_time: bool = typer.Option(
        False, "--export", help="Time each backend's export instead (ExecuTorch beside its own lowering path)."
    ),
) -> None:
    """Latency of each model in eager PyTorch, ExecuTorch, LiteRT and ONNX Runtime, measured in one run.

    Prints median/p90 at the same thread count, the ratio to LiteRT fp32 and to the backend's own float
    artifact, file size, and achieved GFLOP/s against the fp32 GEMM peak measured in the same run. Weights
    are random and perturbed away from the initialisation (a converter folds zero-initialised residual branches,
    which would flatter it); backends are timed in interleaved rounds. With --device: instructions and estimated
    cycles per inference on that ARM core instead (edgevit.bench.device), e.g. `-p fp32 -p int8`. With --export:
    how long each backend's export takes, and ExecuTorch's vs ExecuTorch's own to_edge_transform_and_lower path.
    """
    from edgevit._utils import write_json_atomic
    from edgevit.bench import bench, render_markdown

    precisions = tuple(p.value for p in precision)
    if export_time:
        from edgevit.bench.export import bench_export
        from edgevit.bench.export import render_markdown as render_export

        doc = bench_export(models, img_size=img_size, precisions=precisions)
        typer.echo(render_export(doc))
        if out:
            write_json_atomic(out, doc)
        return
    if device:
        from edgevit.bench.device import bench_device
        from edgevit.bench.device import render_markdown as render_device

        doc = bench_device(models, device, img_size=img_size, precisions=precisions, keep=keep)
        typer.echo(render_device(doc))
        if out:
            write_json_atomic(out, doc)
        return
    doc = bench(models, img_size=img_size, threads=threads, warmup=warmup, runs=runs, precisions=precisions)
    typer.echo(render_markdown(doc))
    if out:
        write_json_atomic(out, doc)


@app.command("bench-train")
def bench_train_cmd(
    batch_size: int = typer.Option(64, "--batch-size", "-b"),
    steps: int = typer.Option(15, "--steps", help="Timed optimizer steps per run (after 3 warm-up steps)."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved plain/edgevit pairs; the best of each counts."),
    threads: int = typer.Option(2, "--threads"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the results as JSON here."),
) -> None:
    """Training img/s of `edgevit train`'s loop beside a plain PyTorch loop (quickstart ViT, digits, AdamW).

    Both run in this process, interleaved; the ratio is the cost of the recipe machinery (schedule, EMA hooks,
    checkpoint bookkeeping, progress, TensorBoard).
    """
    from edgevit._utils import write_json_atomic
    from edgevit.bench.train import bench_train, render

    doc = bench_train(batch_size=batch_size, steps=steps, rounds=rounds, threads=threads, progress=True)
    typer.echo(render(doc))
    if out:
        write_json_atomic(out, doc)


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

    With --qat, an OUT that already holds a trained model is not retrained: QAT fine-tunes it with each
    backend's QAT quantizer (the backends of the recipe's `method: qat` targets, default executorch);
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
        for backend, top1 in stage_qat(out, resume=resume).items():
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
        _timings(run_dir)
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
) -> None:
    """Re-check every artifact of RUN_DIR against its PyTorch model on the whole validation split.

    Writes parity.json and report.md (parity-DEVICE.json and report-DEVICE.md for --device); exits 1 when any
    artifact misses its tolerance (use it as a CI gate). On an emulated device each artifact is also compared with
    its own host run, and latency is not measured. A device profile runs the artifacts that device uses, the way it
    runs them (threads, 8-bit input), and the report says which parts were real and which emulated.
    """
    from edgevit.recipe import stage_parity

    report, md = stage_parity(run_dir, device=device, cache=cache, explain=explain)
    _summary(report, md)
    _explained(report)
    if not report.passed:
        raise typer.Exit(1)


target_app = typer.Typer(help="Emulated device targets for `edgevit parity --device`.", no_args_is_help=True)
app.add_typer(target_app, name="target")


@target_app.command("list")
def target_list_cmd() -> None:
    """The emulated targets (cache directory, set up or not), then the device profiles for `parity --device`."""
    from edgevit.parity.devices import get_profile, list_profiles
    from edgevit.targets import get_target, list_targets

    for name in list_targets():
        t = get_target(name)
        missing = t.pending()
        state = "ready" if not missing else f"not set up (missing: {', '.join(missing)})"
        typer.echo(f"{name}\t{state}\t{t.cache}\t{t.description}")
    for name in list_profiles():
        p = get_profile(name)
        where = f"on {p.arm64_target} when set up, else this host" if p.arm64_target else "this host"
        typer.echo(f"{name}\tprofile ({where})\t{', '.join(p.backends)}: {', '.join(p.precisions)}\t{p.description}")


@target_app.command("setup")
def target_setup_cmd(
    name: str = typer.Argument(..., help="The target, e.g. android-arm64 (see `edgevit target list`)."),
    cache: Path | None = typer.Option(
        None, help="Cache directory (default $EDGEVIT_CACHE/targets/NAME or ~/.cache/edgevit/targets/NAME)."
    ),
    mirror: str | None = typer.Option(
        None, help="Debian mirror URL (default $EDGEVIT_DEBIAN_MIRROR or deb.debian.org)."
    ),
) -> None:
    """Download and cache what NAME needs (emulator, sysroot, runtimes); re-running it is a no-op."""
    import time

    from edgevit.targets import get_target

    t = get_target(name, cache, **({"mirror": mirror} if mirror else {}))
    t0 = time.perf_counter()
    ran = t.setup()
    took = f" in {time.perf_counter() - t0:.0f} s" if ran else ""
    _echo(f"{name} ready in {t.cache}{took} ({'built: ' + ', '.join(ran) if ran else 'already set up'})")


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
    _summary(report, md)
    _timings(out)
    if not report.passed:
        raise typer.Exit(1)


def _timings(run_dir: Path) -> None:
    """Print the run's stage timing table (``RUN/timings.json``)."""
    from rich.console import Console

    from edgevit.recipe.timings import read_timings, table

    rows = read_timings(run_dir)
    if rows:
        Console(stderr=True).print(table(rows, title=f"where the time went ({run_dir / 'timings.json'})"))


def _summary(report, md: Path) -> None:
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


def _explained(report) -> None:
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


# ----------------------------------------------------------------------------------- demo apps (edgevit.apps)


class AppPlatform(str, Enum):
    android = "android"
    ios = "ios"


@app.command("bundle")
def bundle_cmd(
    run_dir: Path = typer.Argument(..., help="A trained and exported run directory."),
    platform: AppPlatform = typer.Option(..., "--platform", help="android (.pte, .tflite) or ios (.mlpackage, .pte)."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder (replaced if it holds a bundle)."),
    cases: int = typer.Option(8, "--cases", min=0, help="Golden cases to write (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the golden cases."),
) -> None:
    """Write an app bundle: the platform's models, bundle.json (classes, preprocess, tensors) and golden cases."""
    from edgevit.apps import write_bundle

    bundle = write_bundle(run_dir, platform.value, out, cases=cases, seed=seed)
    for m in bundle.models:
        _echo(f"{m.key}: {m.backend} {m.precision}, input {m.input.dtype} {m.input.layout} {list(m.input.shape)}")
    _echo(f"bundle: {out}/bundle.json ({len(bundle.models)} models, {cases} golden cases)")


@app.command("app-check")
def app_check_cmd(
    platform: AppPlatform = typer.Argument(..., help="Whose golden runner: android or ios."),
    bundle: Path = typer.Option(..., "--bundle", help="A bundle written by `edgevit bundle`."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the fresh cases."),
    cases: int = typer.Option(200, "--cases", min=1, help="How many fresh random cases."),
    runner: str | None = typer.Option(
        None, "--runner", help="Runner command (default: the platform's run-golden.sh; 'python': the NumPy one)."
    ),
    keep: Path | None = typer.Option(None, "--keep", help="Keep the cases and the runner's results in this folder."),
) -> None:
    """Run a core's golden runner on fresh random cases and compare with the NumPy reference; exit 1 on a mismatch."""
    from edgevit.apps import app_check

    result = app_check(platform.value, bundle, seed=seed, cases=cases, runner=runner, workdir=keep)
    for line in result.mismatches[:10]:
        _echo(f"mismatch: {line}")
    if len(result.mismatches) > 10:
        _echo(f"... and {len(result.mismatches) - 10} more mismatches")
    typer.echo(f"{result.passed} passed, {result.failed} failed  (runner: {result.runner})")
    if not result.ok:
        raise typer.Exit(1)


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


if __name__ == "__main__":
    main()
