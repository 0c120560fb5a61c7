"""The fp32 parity gate has teeth: a x1.01 error in any single layer's weights of the quickstart model, planted in the
shipped ExecuTorch, LiteRT and ONNX files themselves, fails the default fp32 tolerance; the clean files pass it.

Planting edits the artifact's bytes: each weight tensor of the trained model is looked up in the file (as stored:
as is, transposed, or channels-last) and scaled there, so the file differs from the model by exactly that layer, as a
stale checkpoint or a bad conversion would. A tensor the converter folded into another (LiteRT folds LayerNorm affines
into the next matmul) is not in the file as such and cannot be planted; the test counts what it could plant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevit.export import Artifact
from edgevit.parity import DEFAULT_TOLERANCES, judge, metrics, run_all
from edgevit.recipe import trained

BACKENDS = {"executorch": "executorch_fp32.pte", "tflite": "tflite_fp32.tflite", "onnx": "onnx_fp32.onnx"}
# the share of layers whose weights each file stores as such: all for ExecuTorch and ONNX; LiteRT folds each
# LayerNorm's scale into the next matmul's weights (qkv, fc1), so those 16 of 28 exist only as products there
PLANTABLE = {"executorch": 1.0, "onnx": 1.0, "tflite": 0.4}
IMAGES = 120  # validation images per check (the gate's metrics need no more to show a planted layer)
EPS = 0.01


def _layouts(t: torch.Tensor) -> list[np.ndarray]:
    """How a converter may store ``t``: as is, transposed (a matmul's [in, out]), conv weights channels-last."""
    a = t.detach().float().numpy()
    out = [a]
    if a.ndim == 2:
        out.append(a.T)
    if a.ndim == 4:
        out += [a.transpose(0, 2, 3, 1), a.transpose(2, 3, 1, 0)]  # OHWI (LiteRT, XNNPACK), HWIO
    return [np.ascontiguousarray(x, np.float32) for x in out]


def plant(data: bytes, tensor: torch.Tensor, scale: float) -> bytes | None:
    """``data`` with ``tensor``'s float32 values scaled by ``scale`` where the file stores them (exactly one match
    of one layout); None when the file does not store the tensor as such."""
    for arr in _layouts(tensor):
        needle = arr.tobytes()
        at = data.find(needle)
        if at < 0 or data.find(needle, at + 1) >= 0:
            continue
        return data[:at] + (arr * np.float32(scale)).astype(np.float32).tobytes() + data[at + len(needle) :]
    return None


def weight_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every layer's weights (conv, linear, norm scale) and the position embedding: the tensors whose x1.01 means a
    layer computing 1% off. Biases and the class token are left out: 1% of a bias near zero, or of the one token the
    head reads after four blocks, moves the logits less than some healthy fp32 files differ (89 dB and more, see
    edgevit/parity/config.py)."""
    return {
        n: p
        for n, p in model.named_parameters()
        if not n.endswith(".bias") and not n.endswith("_token") and p.numel() >= 16
    }


@pytest.fixture(scope="module")
def gate(quickstart_run):
    _, model, data, _ = trained(quickstart_run)
    model.eval()
    x = np.stack([data.val[i][0].numpy() for i in range(IMAGES)])
    labels = np.array([int(data.val[i][1]) for i in range(IMAGES)])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return model, x, labels, ref


def _verdict(path, backend, x, labels, ref) -> list:
    logits = run_all(Artifact(backend, "fp32", path).load(1), x, backend, progress=False)
    m = metrics(logits, ref, labels)
    return judge(m, float((ref.argmax(-1) == labels).mean() * 100), DEFAULT_TOLERANCES["fp32"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_one_percent_error_in_any_single_layer_fails_the_fp32_gate(backend, gate, quickstart_run, tmp_path):
    model, x, labels, ref = gate
    shipped = quickstart_run / "artifacts" / BACKENDS[backend]
    assert _verdict(shipped, backend, x, labels, ref) == []  # the clean file passes
    data = shipped.read_bytes()
    planted, caught, missed = [], [], []
    for name, tensor in weight_tensors(model).items():
        bad = plant(data, tensor, 1 + EPS)
        if bad is None:
            continue
        path = tmp_path / f"planted{shipped.suffix}"
        path.write_bytes(bad)
        planted.append(name)
        (caught if _verdict(path, backend, x, labels, ref) else missed).append(name)
    layers = len(weight_tensors(model))
    print(f"{backend}: x{1 + EPS} planted in {len(planted)} of {layers} layers' weights, caught {len(caught)}")
    assert len(planted) >= PLANTABLE[backend] * layers, f"{backend}: planted only {planted}"
    assert missed == [], f"{backend}: the fp32 gate passed these planted layers: {missed}"


def test_plant_finds_and_scales_exactly_the_stored_tensor():
    w = torch.randn(6, 5)
    blob = b"head" + np.ascontiguousarray(w.numpy().T).tobytes() + b"tail"  # stored transposed, as a matmul's
    out = plant(blob, w, 2.0)
    got = np.frombuffer(out[4:-4], np.float32).reshape(5, 6).T
    assert out[:4] == b"head" and out[-4:] == b"tail" and np.allclose(got, 2 * w.numpy())
    assert plant(b"nothing here", w, 2.0) is None


def test_cosine_alone_cannot_see_a_scaled_layer_but_the_fp32_gate_does():
    """Scaling the classifier scales every logit: cosine stays 1.0, PSNR does not (the 5% head error of the issue
    passed the old cosine-only fp32 gate)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 10)).astype(np.float32) * 5
    labels = ref.argmax(-1)
    m = metrics(ref * 1.01, ref, labels)
    assert m["cosine"] > 0.9999999 and m["agreement"] == 1.0
    assert [v.metric for v in judge(m, 100.0, DEFAULT_TOLERANCES["fp32"])] == ["psnr_db"]
    assert judge(metrics(ref + 1e-6, ref, labels), 100.0, DEFAULT_TOLERANCES["fp32"]) == []  # fp32 rounding passes
