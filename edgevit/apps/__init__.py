"""On-device demo apps' Python side: the app bundle (``bundle.json`` + models + golden cases), the NumPy reference
of the app pipeline, and ``app-check`` against the Kotlin/Swift cores (contract: ``docs/reference/bundle.md``)."""

from edgevit.apps.bundle import Bundle, ModelEntry, parse_bundle, read_bundle
from edgevit.apps.check import CheckResult, app_check, runner_command
from edgevit.apps.golden import Case, read_cases, write_cases, write_golden
from edgevit.apps.pipeline import Frame, Quant, TensorSpec, frame_from_image, model_input, softmax, top_k
from edgevit.apps.writer import platform_artifacts, write_bundle

__all__ = [
    "Bundle",
    "Case",
    "CheckResult",
    "Frame",
    "ModelEntry",
    "Quant",
    "TensorSpec",
    "app_check",
    "frame_from_image",
    "model_input",
    "parse_bundle",
    "platform_artifacts",
    "read_bundle",
    "read_cases",
    "runner_command",
    "softmax",
    "top_k",
    "write_bundle",
    "write_cases",
    "write_golden",
]
