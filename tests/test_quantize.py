"""PT2E static int8 with the XNNPACK quantizer: the graph really is int8, and it lowers to XNNPACK."""

import functools

import numpy as np
import torch

from edgevit.data import calibration_batch
from edgevit.export import export
from edgevit.quantize import PTQConfig, quantize


def _quantized(model, digits32, n=32):
    example = digits32.val[0][0][None].clone()
    calib = calibration_batch(digits32.train, n)
    return quantize(model, PTQConfig(calib_images=n), calib, example, progress=False), example


def test_quantized_graph_has_per_channel_int8_weights(tiny_vit, digits32):
    q, _ = _quantized(tiny_vit, digits32)
    targets = [str(n.target) for n in q.graph.nodes if n.op == "call_function"]
    assert any("quantize_per_tensor" in t for t in targets)  # activations
    assert any("dequantize_per_channel" in t for t in targets)  # per-channel weights
    consts = [functools.reduce(getattr, n.target.split("."), q) for n in q.graph.nodes if n.op == "get_attr"]
    int8_consts = [c for c in consts if isinstance(c, torch.Tensor) and c.dtype == torch.int8]
    assert len(int8_consts) >= 6  # qkv, proj, fc1, fc2, head, patch conv


def test_int8_pytorch_and_executorch_agree_with_fp32_on_digits(tiny_vit, digits32, tmp_path):
    q, example = _quantized(tiny_vit, digits32, 64)
    images = torch.stack([digits32.val[i][0] for i in range(64)])
    with torch.no_grad():
        ref = tiny_vit(images).numpy()
        simulated = torch.cat([q(images[i : i + 1]) for i in range(64)]).numpy()
    cos = (ref * simulated).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(simulated, axis=1)
    assert cos.mean() > 0.95  # random-init logits are small and flat; the trained quickstart model gets >0.999
    art = export(q, example, "executorch", tmp_path / "q.pte", "int8")
    assert art.info["partitions"] >= 1
    run = art.load(2)
    on_xnnpack = np.concatenate([run(images[i : i + 1].numpy()) for i in range(64)])
    # XNNPACK's int8 kernels compute what the q/dq graph simulates, up to an occasional rounding step
    assert np.abs(on_xnnpack - simulated).mean() < 0.01 * np.abs(simulated).max()
    assert (on_xnnpack.argmax(1) == simulated.argmax(1)).mean() >= 0.9
    fp32 = export(tiny_vit, example, "executorch", tmp_path / "f.pte")
    assert art.path.stat().st_size < 0.4 * fp32.path.stat().st_size
