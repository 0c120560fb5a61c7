"""Parity's settings: pass criteria per precision (vs PyTorch, and an emulated device vs the host run) and the
``parity:`` section of a recipe."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgevit.parity.cost import CostConfig


class Tolerance(BaseModel):
    """Pass criteria for one precision."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(ge=0, le=1, description="fraction of images with the reference's top-1 class")
    max_top1_drop: float = Field(ge=0, description="allowed top-1 loss vs the reference, in points")
    min_cosine: float = Field(0.0, ge=-1, le=1, description="minimum mean logit cosine similarity")
    min_psnr_db: float | None = Field(None, description="minimum logit PSNR in dB (None: not judged)")
    max_kl_div: float | None = Field(None, ge=0, description="largest mean softmax KL, nats (None: not judged)")


# Float artifacts are judged on their logits' PSNR too: cosine cannot see a scaled layer (a classifier x1.05 keeps
# every logit's direction), and an fp32 artifact that differs from PyTorch by 1e-2 is broken whatever its top-1 says.
# Measured (docs/design-notes.md, "How tight the float gates are"): clean fp32 artifacts of the zoo families
# (ExecuTorch, LiteRT, ONNX) read 124-136 dB, an ill-conditioned digits ViT (a ridge-fitted head) 99.6 dB on ONNX
# Runtime; the quickstart model with any one layer's weights x1.01 reads 54-77 dB (its pos_embed 71 dB). Core ML fp16
# (emulated) reads 62-71 dB clean. 85 dB sits between the two with margins of ~8 and ~15 dB.
FP32_MIN_PSNR_DB = 85.0
FP16_MIN_PSNR_DB = 45.0

DEFAULT_TOLERANCES = {
    "fp32": Tolerance(min_agreement=0.995, max_top1_drop=0.5, min_cosine=0.9999, min_psnr_db=FP32_MIN_PSNR_DB),
    "fp16": Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999, min_psnr_db=FP16_MIN_PSNR_DB),
    "int8": Tolerance(min_agreement=0.98, max_top1_drop=1.0, min_cosine=0.98),
    "int8-dynamic": Tolerance(min_agreement=0.98, max_top1_drop=1.0, min_cosine=0.98),
    "w8": Tolerance(min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.995),
    "w4": Tolerance(min_agreement=0.95, max_top1_drop=2.0, min_cosine=0.95),
    "w4-lut": Tolerance(min_agreement=0.95, max_top1_drop=2.0, min_cosine=0.95),
    "sparse": Tolerance(  # lossless storage of an fp16 program
        min_agreement=0.99, max_top1_drop=1.0, min_cosine=0.999, min_psnr_db=FP16_MIN_PSNR_DB
    ),
}


class DeviceTolerance(BaseModel):
    """Pass criteria for a device's logits vs the host run of the same artifact (same graph, other kernels)."""

    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(ge=0, le=1, description="fraction of images with the host run's top-1 class")
    max_abs_err: float | None = Field(None, ge=0, description="largest allowed |logit difference| (None: no limit)")


# fp32: the same fp32 graph on NEON instead of AVX kernels differs only by accumulation order and FMA contraction
# (measured ~1e-6 on the quickstart ViT); quantized graphs can round an int8 activation differently and flip
# a near-tied image, so they are judged by argmax agreement only.
DEFAULT_DEVICE_TOLERANCES = {
    "fp32": DeviceTolerance(min_agreement=1.0, max_abs_err=1e-4),
    "fp16": DeviceTolerance(min_agreement=0.99),
    "int8": DeviceTolerance(min_agreement=0.99),
    "int8-dynamic": DeviceTolerance(min_agreement=0.99),
}


class ParityConfig(BaseModel):
    """How parity runs (the ``parity:`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(2, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=1, description="timed runs for the latency distribution")
    tolerances: dict[str, Tolerance] = Field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    device_tolerances: dict[str, DeviceTolerance] = Field(
        default_factory=lambda: dict(DEFAULT_DEVICE_TOLERANCES),
        description="an emulated device's logits vs the host run of the same artifact, per precision",
    )
    cost: CostConfig = Field(default_factory=CostConfig, description="ARM cost profile gates (edgevit.parity.cost)")

    @field_validator("tolerances", "device_tolerances", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any, info) -> Any:
        """A recipe's ``{int8: {min_agreement: 0.97}}`` overrides only the keys it names; the rest of that
        precision's default stays (so overriding one threshold never silently drops the others)."""
        defaults = DEFAULT_TOLERANCES if info.field_name == "tolerances" else DEFAULT_DEVICE_TOLERANCES
        if not isinstance(value, dict):
            return value
        return {
            p: ({**defaults[p].model_dump(), **t} if isinstance(t, dict) and p in defaults else t)
            for p, t in value.items()
        }

    def tolerance(self, precision: str) -> Tolerance:
        """The tolerance for ``precision``, falling back to the defaults."""
        return self.tolerances.get(precision) or DEFAULT_TOLERANCES[precision]

    def device_tolerance(self, precision: str) -> DeviceTolerance:
        """The device-vs-host tolerance for ``precision`` (defaults: fp32 near-identical, else 99% agreement)."""
        tol = self.device_tolerances.get(precision) or DEFAULT_DEVICE_TOLERANCES.get(precision)
        return tol or DeviceTolerance(min_agreement=0.99)
