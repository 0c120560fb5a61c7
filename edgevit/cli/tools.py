"""``edgevit`` commands around the pipeline: the model zoo, benchmarks, emulated device targets and the demo apps'
bundles and checks."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from edgevit.cli.app import Precision, _echo, app


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
    from edgevit.bench import bench, render_markdown
    from edgevit.utils import write_json_atomic

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
    from edgevit.bench.train import bench_train, render
    from edgevit.utils import write_json_atomic

    doc = bench_train(batch_size=batch_size, steps=steps, rounds=rounds, threads=threads, progress=True)
    typer.echo(render(doc))
    if out:
        write_json_atomic(out, doc)


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
