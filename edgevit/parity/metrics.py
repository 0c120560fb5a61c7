"""Metrics of an artifact's logits vs the reference's, and the judgement of them against a tolerance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgevit.parity.config import DeviceTolerance, Tolerance


def top_k(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Percent of rows of ``[N, K]`` ``logits`` whose label is among the ``k`` largest (ties: lower index first)."""
    k = min(k, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # [N, K] -> [N, k] class indices
    return float((top == np.asarray(labels)[:, None]).any(-1).mean() * 100.0)


def psnr_db(logits: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``logits`` vs ``reference`` over all values: ``10 log10(peak² / MSE)``, ``peak`` the reference's
    range ``max - min`` (logits have no fixed peak; their spread is the scale an error should be read against).
    ``inf`` when they are identical."""
    ref = reference.astype(np.float64)
    mse = float(np.mean((logits.astype(np.float64) - ref) ** 2))
    peak = float(ref.max() - ref.min())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(max(peak, 1e-12) ** 2 / mse)


def kl_div(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean over rows of ``KL(softmax(reference) || softmax(logits))`` in nats (how much probability mass the
    artifact moves; 0 when the distributions agree), computed in float64 with log-softmax."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(logits)
    return float(np.mean((np.exp(log_p) * (log_p - log_q)).sum(-1)))


def metrics(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Top-1/top-5 (percent), argmax agreement (fraction), abs errors, mean cosine, PSNR (dB; None when the logits
    are identical) and mean softmax KL (nats) of ``[N, K]`` ``logits`` vs ``reference``."""
    err = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
    num = (logits * reference).sum(-1, dtype=np.float64)
    den = np.linalg.norm(logits.astype(np.float64), axis=-1) * np.linalg.norm(reference.astype(np.float64), axis=-1)
    cos = num / np.maximum(den, 1e-12)
    psnr = psnr_db(logits, reference)
    return {
        "top1": float((logits.argmax(-1) == labels).mean() * 100.0),
        "top5": top_k(logits, labels, 5),
        "agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "cosine": float(cos.mean()),
        "psnr_db": None if math.isinf(psnr) else psnr,  # JSON has no infinity
        "kl_div": kl_div(logits, reference),
    }


@dataclass(frozen=True)
class Violation:
    """One tolerance bound a metric missed: ``metric`` (``agreement``, ``top1_drop``, ``cosine``, ``psnr_db`` or
    ``kl_div``), its ``value`` and the ``bound``. ``str()`` is the message in ``parity.json``'s ``failures``;
    :attr:`margin` says by how much it missed."""

    metric: str
    value: float
    bound: float

    # metric -> (message label, value format, "<" for a lower bound / ">" for an upper bound, unit)
    _FORMS = {
        "agreement": ("agreement", ".4f", "<", ""),
        "top1_drop": ("top-1 drop", ".2f", ">", " points"),
        "cosine": ("cosine", ".6f", "<", ""),
        "psnr_db": ("PSNR", ".1f", "<", " dB"),
        "kl_div": ("KL divergence", ".2e", ">", ""),
    }

    def __str__(self) -> str:
        label, spec, op, unit = self._FORMS[self.metric]
        return f"{label} {self.value:{spec}}{unit} {op} {self.bound}"

    @property
    def margin(self) -> str:
        """``short by 0.0120`` / ``over by 2.00 points``: how far past its bound the value is."""
        _, spec, op, unit = self._FORMS[self.metric]
        spec = {"cosine": ".2e"}.get(self.metric, spec)
        if op == "<":
            return f"short by {self.bound - self.value:{spec}}{unit}"
        return f"over by {self.value - self.bound:{spec}}{unit}"


def judge(m: dict[str, float], reference_top1: float, tol: Tolerance) -> list[Violation]:
    """The tolerance violations of metrics ``m`` (empty when it passes), as :class:`Violation` s (``str()`` of each
    is the report's failure message)."""
    out = []
    if m["agreement"] < tol.min_agreement:
        out.append(Violation("agreement", m["agreement"], tol.min_agreement))
    drop = reference_top1 - m["top1"]
    if drop > tol.max_top1_drop:
        out.append(Violation("top1_drop", drop, tol.max_top1_drop))
    if m["cosine"] < tol.min_cosine:
        out.append(Violation("cosine", m["cosine"], tol.min_cosine))
    psnr = m.get("psnr_db")  # None: identical logits (infinite PSNR)
    if tol.min_psnr_db is not None and psnr is not None and psnr < tol.min_psnr_db:
        out.append(Violation("psnr_db", psnr, tol.min_psnr_db))
    if tol.max_kl_div is not None and m.get("kl_div") is not None and m["kl_div"] > tol.max_kl_div:
        out.append(Violation("kl_div", m["kl_div"], tol.max_kl_div))
    return out


def judge_vs_host(m: dict[str, float], tol: DeviceTolerance) -> list[str]:
    """The device-vs-host tolerance violations of metrics ``m`` (empty when it passes)."""
    failures = []
    if m["agreement"] < tol.min_agreement:
        failures.append(f"agreement with host run {m['agreement']:.4f} < {tol.min_agreement}")
    if tol.max_abs_err is not None and m["max_abs_err"] > tol.max_abs_err:
        failures.append(f"max abs diff from host run {m['max_abs_err']:.2e} > {tol.max_abs_err:.0e}")
    return failures
