"""The stages that run a recipe: train, QAT, export (quantizing per backend, in parallel processes), parity
(prune and sparsify: :mod:`edgevit.recipe.compress`).

Every stage reads and writes files in a run directory (:mod:`edgevit.rundir` owns its layout), so each CLI verb
can run on its own.

Why one file over ~450 lines: the stages share how a trained run is loaded and calibrated (``trained``,
``example_image``, the calibration sample), which must stay one definition; each stage is a function of its own.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.backends import get_backend
from edgevit.data import DataSplits, build_dataset, calibration_batch, select_classes
from edgevit.data.eval_transform import eval_transform
from edgevit.data.transforms import AugConfig
from edgevit.export import Artifact, export
from edgevit.models import create_model, load_model, save_model
from edgevit.parity import ParityReport, app_inputs, check, latency_fit, write_report
from edgevit.parity.devices import get_device
from edgevit.parity.explain import explain_report
from edgevit.quantize import CALIBRATED_PRECISIONS, PTQConfig, shared_capture
from edgevit.quantize.mixed import plan_mixed_precision
from edgevit.quantize.qat import convert_qat, load_qat, train_qat
from edgevit.recipe.config import Recipe, Target
from edgevit.recipe.timings import record as record_timing
from edgevit.recipe.timings import timed
from edgevit.rundir import (
    manifest_artifacts,
    model_path,
    plan_path,
    qat_dir,
    read_manifest,
    recipe_path,
    record,
    report_paths,
)
from edgevit.train import TrainConfig, predict, seed_everything, top1, train
from edgevit.train.distill import load_teacher
from edgevit.train.finetune import freeze_backbone_, frozen_to_eval_, load_pretrained_, resolve_source
from edgevit.train.multiscale import check_sizes
from edgevit.utils import EdgeVitError, progress_bar

# ---------------------------------------------------------------------------------------------- stages


def build_model_and_data(
    recipe: Recipe, num_classes: int | None = None, augment: bool = False
) -> tuple[torch.nn.Module, DataSplits, dict]:
    """The recipe's model (fresh weights) and its data, normalised with the model's own mean/std.

    ``augment``: training images get the recipe's ``train.aug`` and the model ``train.drop_path`` (for
    training; export, calibration and fine-tuning stages see the plain images).
    """
    args = {"img_size": recipe.data.img_size, **recipe.model.args}
    if augment and recipe.train.drop_path is not None:
        args["drop_path_rate"] = recipe.train.drop_path
    try:
        probe = create_model(recipe.model.name, **args)
    except EdgeVitError as e:
        # a timm convnet (timm/resnet18, timm/efficientnet_b0) takes any input size and no img_size argument
        if not _rejects_img_size(recipe, e):
            raise
        del args["img_size"]
        probe = create_model(recipe.model.name, **args)
    cfg = probe.default_cfg
    kwargs: dict[str, Any] = {"img_size": recipe.data.img_size, "val_fraction": recipe.data.val_fraction}
    kwargs.update(seed=recipe.seed, mean=cfg["mean"], std=cfg["std"])
    if recipe.data.name == "imagefolder":
        kwargs.update(root=recipe.data.root, bad_images=recipe.data.bad_images)
    if augment:
        kwargs["aug"] = recipe.train.aug
    data = build_dataset(recipe.data.name, **kwargs)
    if recipe.data.classes is not None:
        data = select_classes(data, recipe.data.classes)
    args["num_classes"] = num_classes or len(data.classes)
    seed_everything(recipe.seed)
    return create_model(recipe.model.name, **args), data, args


def _rejects_img_size(recipe: Recipe, error: EdgeVitError) -> bool:
    """Whether ``error`` is a ``timm/`` model refusing the ``img_size`` that the recipe added (not one the
    recipe's ``model.args`` asked for)."""
    cause = str(error.__cause__ or "")
    return (
        recipe.model.name.startswith("timm/")
        and "img_size" not in recipe.model.args
        and "unexpected keyword argument 'img_size'" in cause
    )


def _inherit_source_args(recipe: Recipe) -> Recipe:
    """``recipe`` with ``model.args`` completed from ``finetune.from``'s ``model.json`` (the recipe's own args win;
    ``img_size``, ``num_classes`` and ``drop_path_rate`` come from this recipe's data and train sections).

    Raises:
        EdgeVitError: the source is missing, or holds another architecture than ``model.name``.
    """
    _, meta = resolve_source(recipe.finetune.source)
    if meta is None:  # a bare state dict: the recipe must spell the architecture out
        return recipe
    if meta["name"] != recipe.model.name:
        raise EdgeVitError(
            f"finetune.from: {recipe.finetune.source} holds a {meta['name']} model but the recipe's model.name is "
            f"{recipe.model.name}; fine-tuning keeps the architecture"
        )
    skip = ("img_size", "num_classes", "drop_path_rate")
    args = {**{k: v for k, v in meta.get("args", {}).items() if k not in skip}, **recipe.model.args}
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"args": args})})


def load_run(run_dir: str | Path) -> Recipe:
    """The resolved recipe of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgeVitError(f"run directory not found: {run_dir}")
    return Recipe.load(recipe_path(run_dir))


def stage_train(recipe: Recipe, run_dir: str | Path, resume: bool = False, progress: bool = True) -> float:
    """Train the recipe's model; write ``model.safetensors``/``model.json``; return final val top-1 (%).

    With ``train.ema_decay`` the saved model (the one exported) is the EMA of the weights, and its top-1 is
    returned (``model.json`` also records the raw weights' ``val_top1_raw``). Under ``torchrun`` every process
    trains its share and rank 0 writes the files. ``train.distill.teacher`` is loaded from its run directory.

    With a ``finetune:`` section the model starts from ``finetune.from`` (see :mod:`edgevit.train.finetune`):
    the recipe inherits the source's model arguments (its own win; the saved ``recipe.yaml`` has them all),
    position embeddings are resampled to ``data.img_size``, the head is re-initialised when the classes
    differ, and ``model.json`` records what was loaded and the val top-1 before fine-tuning under ``finetune``.

    Raises:
        EdgeVitError: see :func:`edgevit.train.train` and :func:`edgevit.train.finetune.load_pretrained_`.
    """
    run_dir = Path(run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    if recipe.finetune is not None:
        recipe = _inherit_source_args(recipe)
    model, data, args = build_model_and_data(recipe, augment=True)  # a model or data it cannot build: no run dir
    if recipe.train.multiscale:  # before any training, naming the recipe's model
        check_sizes(model, recipe.train.multiscale.sizes, tuple(data.val[0][0].shape), recipe.model.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        recipe.save(recipe_path(run_dir))
    extra: dict[str, Any] = {}
    on_epoch_start = None
    if recipe.finetune is not None:
        ft = recipe.finetune
        report = load_pretrained_(model, ft.source, classes=data.classes, reset_head=ft.reset_head)
        if ft.linear_probe:
            freeze_backbone_(model)
            on_epoch_start = lambda epoch: frozen_to_eval_(model)  # noqa: E731  (after the loop's model.train())
        report.val_top1_before = top1(*predict(model, data.val))  # FixRes: the source model at the new size
        extra["finetune"] = {**ft.model_dump(mode="json"), **report.to_json()}
        del extra["finetune"]["source"]  # the same path as "from"
    teacher = load_teacher(recipe.train.distill.teacher, model.default_cfg, data) if recipe.train.distill else None
    with timed(run_dir, "train"):
        result = train(
            model,
            data,
            recipe.train,
            run_dir,
            seed=recipe.seed,
            resume=resume,
            progress=progress,
            teacher=teacher,
            on_epoch_start=on_epoch_start,
        )
    if result.ema_model:
        extra.update(val_top1_raw=result.final_val_top1_raw, ema_decay=recipe.train.ema_decay)
    if main:
        save_model(
            result.ema_model or model,
            recipe.model.name,
            {k: v for k, v in args.items() if k != "drop_path_rate"},  # training-only; eval ignores it
            model_path(run_dir),
            classes=data.classes,
            mean=list(model.default_cfg["mean"]),
            std=list(model.default_cfg["std"]),
            val_top1=result.final_val_top1,
            **extra,
        )
    return result.final_val_top1


def qat_backends(recipe: Recipe) -> list[str]:
    """The backends the recipe's ``method: qat`` targets need a QAT run for (default: executorch)."""
    return list(dict.fromkeys(t.backend for t in recipe.export.targets if t.method == "qat")) or ["executorch"]


def stage_qat(
    run_dir: str | Path,
    backends: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    recipe: Recipe | None = None,
) -> dict[str, float]:
    """Quantization-aware fine-tuning of RUN's trained float model with each backend's QAT quantizer (the
    recipe's ``qat:`` section) into ``RUN/qat/<backend>/``; ``method: qat`` targets export from there.
    Returns the fake-quantized model's val top-1 per backend.

    ``recipe`` (default: the run's own): a recipe whose ``qat:`` section and ``method: qat`` targets to use, e.g.
    the one given to ``edgevit train RECIPE --out RUN --qat``; it must name the run's model and data. They are
    written into ``RUN/recipe.yaml`` (atomically) before training, so the run records the QAT it holds.

    Raises:
        EdgeVitError: ``recipe`` names another model or dataset than the run was trained with.
    """
    run_dir = Path(run_dir)
    run_recipe, model, data, _ = trained(run_dir)
    if recipe is not None:
        for part in ("model", "data"):
            if getattr(recipe, part) != getattr(run_recipe, part):
                raise EdgeVitError(
                    f"the recipe's {part}: section differs from {recipe_path(run_dir)}'s; QAT fine-tunes the model "
                    f"{run_dir} holds: give the recipe it was trained with (edited only in qat: or export:), or a "
                    "new --out to train from scratch"
                )
        if (recipe.qat, recipe.export) != (run_recipe.qat, run_recipe.export):
            run_recipe = run_recipe.model_copy(update={"qat": recipe.qat, "export": recipe.export})
            run_recipe.save(recipe_path(run_dir))
    recipe = run_recipe
    out = {}
    for backend in backends or qat_backends(recipe):
        with timed(run_dir, f"qat {backend}"):
            _, result = train_qat(
                model,
                data,
                recipe.qat,
                qat_dir(run_dir, backend),
                example=example_image(data),
                backend=get_backend(backend),
                train_cfg=_finetune_base(recipe.train),
                seed=recipe.seed,
                resume=resume,
                progress=progress,
            )
        out[backend] = result.final_val_top1
    return out


def _finetune_base(cfg: TrainConfig) -> TrainConfig:
    """The train settings a fine-tuning stage (QAT) inherits: without the from-scratch-only parts (EMA,
    Mixup/CutMix and augmentation, repeated augmentation, multi-scale batches (the QAT graph has one input shape),
    DeiT distillation, SAM, drop-path), which it has its own keys for."""
    opt = cfg.optimizer.model_copy(update={"sam": None, "layer_decay": None})
    update = {"ema_decay": None, "aug": AugConfig(), "distill": None, "optimizer": opt, "drop_path": None}
    update |= {"repeated_aug": None, "multiscale": None}
    return cfg.model_copy(update=update)


def _qat_graph(run_dir: Path, recipe: Recipe, model, example: torch.Tensor, backend: str):
    """The converted QAT graph of ``backend`` (from ``stage_qat``'s last checkpoint), at batch 1."""
    ckpt = qat_dir(run_dir, backend) / "checkpoints"
    if not (ckpt / "last.json").is_file():
        raise EdgeVitError(f"{run_dir} has no {backend} QAT run; run `edgevit train RECIPE --out {run_dir} --qat`")
    return convert_qat(load_qat(model, example, ckpt, get_backend(backend)), example)


def trained(run_dir: str | Path) -> tuple[Recipe, torch.nn.Module, DataSplits, dict]:
    """A trained run's ``(recipe, model, data, model.json meta)``: the model loaded from ``model.safetensors`` and the
    recipe's data split, normalised with the model's mean/std.

    Raises:
        EdgeVitError: no run directory, recipe or trained model there.
    """
    run_dir = Path(run_dir)
    recipe = load_run(run_dir)
    if not model_path(run_dir).is_file():
        raise EdgeVitError(f"{run_dir} has no trained model (model.safetensors); run `edgevit train` first")
    model, meta = load_model(model_path(run_dir))
    _, data, _ = build_model_and_data(recipe, num_classes=meta["args"].get("num_classes"))
    return recipe, model, data, meta


def example_image(data: DataSplits) -> torch.Tensor:
    """The first validation image as a ``[1, C, H, W]`` example input (a copy: a view would drag the dataset)."""
    return data.val[0][0][None].clone()  # [1, C, H, W]; a view would drag the dataset along


def _calib_batch(recipe: Recipe, data: DataSplits) -> torch.Tensor:
    """The deterministic ``quantize.calib_images`` training images static int8 is calibrated with: by
    ``stage_export``, and again by ``stage_parity`` when explain re-quantizes a ``.pte`` (they must be the same)."""
    return calibration_batch(data.train, recipe.quantize.calib_images, seed=recipe.seed)


def stage_export(
    run_dir: str | Path, targets: list[Target] | None = None, progress: bool = True, max_drop: float | None = None
) -> list[Artifact]:
    """Export ``targets`` (default: every target of the recipe) into ``artifacts/``.

    Quantized targets quantize with their backend's own quantizer; static ones calibrate on the recipe's
    ``quantize.calib_images`` training images (the same deterministic sample for every backend). With
    ``quantize.max_drop`` (or ``max_drop``), an accuracy-controlled plan is made first
    (``artifacts/mixed_precision.json``) and its float modules stay float in every quantized target.
    """
    run_dir = Path(run_dir)
    recipe, model, data, meta = trained(run_dir)
    targets = recipe.export.targets if targets is None else targets
    example = example_image(data)
    ptq = recipe.quantize
    if max_drop is not None:
        ptq = ptq.model_copy(update={"max_drop": max_drop})
    calib = None
    mixed = ptq.max_drop is not None and any(t.quantized for t in targets)
    if mixed or any(t.resolved_precision in CALIBRATED_PRECISIONS for t in targets):
        calib = _calib_batch(recipe, data)
    if mixed:
        with timed(run_dir, "mixed-precision plan"):
            plan = _plan_mixed_precision(model, data, calib, ptq, progress)
        plan.save(plan_path(run_dir))
        ptq = ptq.model_copy(update={"keep_float": list(dict.fromkeys(ptq.keep_float + plan.float_modules))})
    groups = backend_groups(targets, export_jobs(recipe.export.jobs, len({t.backend for t in targets})))
    done: dict[int, Artifact] = {}
    with progress_bar(progress) as bars:
        task = bars.add_task("export", total=len(targets), info="")
        if len(groups) == 1:
            with shared_capture():  # the variants of this model share one torch.export
                for i in groups[0]:
                    t = targets[i]
                    bars.update(task, info=f"{t.backend} {t.resolved_precision}")
                    with timed(run_dir, f"export {Path(t.filename(recipe.quantize.method)).stem}"):
                        done[i] = _export_target(run_dir, recipe, model, example, t, calib, ptq)
                    bars.update(task, advance=1)
        else:  # one process per group of backends; each loads the run and calibrates on the same sample
            bars.update(task, info=f"{len(groups)} processes")
            stage, t0 = f"export ({len(groups)} processes in parallel)", time.perf_counter()
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=len(groups), mp_context=spawn) as pool:
                futures = [
                    pool.submit(_export_worker, str(run_dir), [targets[i] for i in g], ptq.model_dump()) for g in groups
                ]
                for g, future in zip(groups, futures, strict=True):
                    for i, (doc, seconds) in zip(g, future.result(), strict=True):
                        done[i] = Artifact.from_json(doc)
                        record_timing(run_dir, f"export {Path(doc['path']).stem}", seconds, within=stage)
                        bars.update(task, advance=1)
            record_timing(run_dir, stage, time.perf_counter() - t0)
    done = [done[i] for i in range(len(targets))]
    preprocess = eval_transform(recipe.data.name, recipe.data.img_size, meta["mean"], meta["std"]).to_json()
    record(run_dir, meta, list(example.shape), done, preprocess)
    return done


def _export_target(run_dir: Path, recipe: Recipe, model, example, t: Target, calib, ptq: PTQConfig) -> Artifact:
    """One target of ``stage_export`` into ``RUN/artifacts``."""
    path = run_dir / "artifacts" / t.filename(recipe.quantize.method)
    if t.method == "qat":
        graph = _qat_graph(run_dir, recipe, model, example, t.backend)
        art = export(graph, example, t.backend, path, t.resolved_precision)
        art.info.update(method="qat", quantizer=get_backend(t.backend).qat_label, qat=recipe.qat.model_dump())
        return art
    t_ptq = ptq.model_copy(update={"method": t.method or ptq.method})
    return export(model, example, t.backend, path, t.resolved_precision, calib=calib, ptq=t_ptq, layout=t.layout)


def export_jobs(configured: int | None, backends: int) -> int:
    """How many processes export at once: ``$EDGEVIT_EXPORT_JOBS``, else the recipe's ``export.jobs``, else
    ``min(2, CPUs)``; never more than the run has backends (a backend's variants share one capture in one process).
    """
    env = os.environ.get("EDGEVIT_EXPORT_JOBS")
    if env is not None and not env.isdigit():
        raise EdgeVitError(f"EDGEVIT_EXPORT_JOBS must be a positive integer, not {env!r}")
    jobs = int(env) if env else configured or min(2, os.cpu_count() or 1)
    return max(1, min(jobs, backends))


def backend_groups(targets: list[Target], jobs: int) -> list[list[int]]:
    """Target indices in ``jobs`` groups: each backend whole in one group (largest first, to the smallest group),
    so the groups take about as long and each backend's variants share one ``torch.export``."""
    by_backend: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        by_backend.setdefault(t.backend, []).append(i)
    groups: list[list[int]] = [[] for _ in range(jobs)]
    for idx in sorted(by_backend.values(), key=len, reverse=True):
        min(groups, key=len).extend(idx)
    return [sorted(g) for g in groups if g]


def _export_worker(run_dir: str, targets: list[Target], ptq: dict) -> list[tuple[dict, float]]:
    """A process of a parallel ``stage_export``: load the run, export ``targets`` in order; ``(artifact record with
    an absolute path, seconds)`` each. Deterministic: the same files as a serial export."""
    torch.set_num_threads(1)  # the other processes use the other cores
    recipe, model, data, _ = trained(run_dir)
    example = example_image(data)
    config = PTQConfig.model_validate(ptq)
    calib = _calib_batch(recipe, data) if any(t.resolved_precision in CALIBRATED_PRECISIONS for t in targets) else None
    out = []
    with shared_capture():
        for t in targets:
            t0 = time.perf_counter()
            art = _export_target(Path(run_dir), recipe, model, example, t, calib, config)
            out.append((art.to_json(), time.perf_counter() - t0))
    return out


def _plan_mixed_precision(model, data: DataSplits, calib: torch.Tensor, ptq: PTQConfig, progress: bool):
    """The max_drop plan, measured with XNNPACK's int8 scheme (Core ML's W8A8 uses the same; litert-torch's and
    ONNX Runtime's are close: symmetric per-channel int8 weights, int8 activations) on the first
    ``accuracy_images`` validation images."""
    n = min(ptq.accuracy_images, len(data.val))
    images = torch.stack([data.val[i][0] for i in range(n)])
    labels = np.array([int(data.val[i][1]) for i in range(n)])
    quantizer = get_backend("executorch").quantizer("int8")
    return plan_mixed_precision(model, quantizer, calib, images, labels, ptq.max_drop, progress=progress)


def stage_parity(
    run_dir: str | Path,
    progress: bool = True,
    device: str | None = None,
    cache: str | Path | None = None,
    explain: bool | None = None,
    calibrate: str | Path | None = None,
) -> tuple[ParityReport, Path]:
    """Check every artifact in the run's manifest on the whole validation split; write the reports.

    ``device`` (default ``host``) is where the artifacts run (:func:`edgevit.parity.devices.get_device`; an
    emulated target is read from ``cache``, default its usual cache); its reports are ``parity-DEVICE.json`` and
    ``report-DEVICE.md``, beside the host's ``parity.json`` and ``report.md``.

    Artifacts are fed the images as an app following ``artifacts/manifest.json`` would (its mean/std); PyTorch
    sees them as in training. ``explain`` (:mod:`edgevit.parity.explain`): None explains each failing artifact,
    True every artifact, False none; the result is each entry's ``explain``. Not on an emulated device.
    ``calibrate``: a CSV of real-device timings (:mod:`edgevit.parity.latency_fit`) that turns the cost profile's
    estimated cycles into labelled milliseconds; needs a device that counts.
    """
    run_dir = Path(run_dir)
    dev = get_device(device, cache)
    timings = latency_fit.read_timings(calibrate) if calibrate is not None else None  # bad input fails first
    if timings is not None and getattr(dev, "cost_cpu", None) is None:
        raise EdgeVitError(f"--calibrate needs a device with an ARM cost profile; {dev.name} does not count")
    if timings is not None and not load_run(run_dir).parity.cost.enabled:
        raise EdgeVitError(
            f"--calibrate needs the cost profile, and {recipe_path(run_dir)} sets parity.cost.enabled: false"
        )
    dev.ensure_ready()  # before minutes of work, not after
    recipe, model, data, meta = trained(run_dir)
    manifest = read_manifest(run_dir)
    artifacts = manifest_artifacts(run_dir, manifest)
    if not artifacts:
        raise EdgeVitError(f"{run_dir}/artifacts has no artifacts; run `edgevit export {run_dir}` first")
    for stale in report_paths(run_dir, dev.name):  # a failed check must never leave an old PASS report behind
        stale.unlink(missing_ok=True)
    images = np.stack([data.val[i][0].numpy() for i in range(len(data.val))])
    labels = np.array([int(data.val[i][1]) for i in range(len(data.val))])

    norm = (meta["mean"], meta["std"]) if "mean" in meta and "std" in meta else None
    app, to_model, norm = app_inputs(images, norm, manifest.get("input"))  # norm: for 8-bit device input

    @torch.no_grad()
    def reference(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(to_model(x))).numpy()

    stage = "parity" if dev.name == "host" else f"parity {dev.name}"
    with timed(run_dir, stage):
        report = check(
            artifacts, app, labels, reference, recipe.parity, progress=progress, device=dev, normalization=norm
        )
    if timings is not None:
        latency_fit.apply(report, timings, str(calibrate))
    if (explain or (explain is None and not report.passed)) and not getattr(dev, "emulated", False):
        calib = None  # what stage_export calibrated static int8 with (deterministic): a tracer may re-quantize
        if any(a.precision in CALIBRATED_PRECISIONS for a in artifacts):
            calib = _calib_batch(recipe, data)
        with timed(run_dir, "explain"):
            explain_report(report, artifacts, model, images, app, bool(explain), calib=calib, ptq=recipe.quantize)
    for entry in report.artifacts:
        entry["path"] = str(Path(entry["path"]).relative_to(run_dir))
    _, md = write_report(report, run_dir)
    return report, md


def run(recipe: Recipe, run_dir: str | Path, resume: bool = False, progress: bool = True) -> tuple[ParityReport, Path]:
    """Train, export (quantizing per backend) and check: the whole recipe into ``run_dir``."""
    stage_train(recipe, run_dir, resume=resume, progress=progress)
    if any(t.method == "qat" for t in recipe.export.targets):
        stage_qat(run_dir, resume=resume, progress=progress)
    stage_export(run_dir, progress=progress)
    return stage_parity(run_dir, progress=progress)


__all__ = [
    "build_model_and_data",
    "example_image",
    "load_run",
    "qat_backends",
    "run",
    "stage_export",
    "stage_parity",
    "stage_qat",
    "stage_train",
    "trained",
]
