"""report.html: rendered from a real parity run on digits, opened in a headless Chromium (screenshot + DOM)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from edgevit.parity.html import render_html, write_html

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")
INSTALL_HINT = (
    "no headless Chromium found: `make test` installs one when run as root on Debian/Ubuntu; otherwise run "
    "`sudo apt-get install chromium-headless-shell` (Debian) or set EDGEVIT_BROWSER=/path/to/chrome"
)


def headless_browser() -> str | None:
    """The Chromium binary to drive: ``$EDGEVIT_BROWSER`` or the first of :data:`BROWSERS` on PATH."""
    env = os.environ.get("EDGEVIT_BROWSER")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def per_layer_errors(model, broken, images: torch.Tensor, tolerance: float) -> dict:
    """The ``explain`` section for ``broken`` vs ``model``, measured with forward hooks (PyTorch on both sides).

    Real per-layer numbers for the renderer (the divergence finder itself is :mod:`edgevit.parity.explain`):
    relative L2 error of each leaf module's output, in network order, and the first one beyond ``tolerance``.
    """
    outs: dict[str, list] = {"ref": [], "bad": []}

    def hook(key, name):
        return lambda mod, args, out: outs[key].append((name, type(mod).__name__, out.detach()))

    handles = [
        m.register_forward_hook(hook(key, name))
        for key, net in (("ref", model), ("bad", broken))
        for name, m in net.named_modules()
        if name and not list(m.children()) and not isinstance(m, torch.nn.Dropout | torch.nn.Identity)
    ]
    with torch.no_grad():
        model(images), broken(images)
    for h in handles:
        h.remove()
    layers = []
    for (name, op, a), (_, _, b) in zip(outs["ref"], outs["bad"], strict=True):
        rel = float((b - a).norm() / a.norm().clamp_min(1e-12))
        layers.append({"module": name, "op": op, "rel_err": rel, "max_abs_err": float((b - a).abs().max())})
    first = next((layer for layer in layers if layer["rel_err"] > tolerance), None)
    return {"tolerance": tolerance, "metric": "rel_l2", "layers": layers, "first_divergent": first}


@pytest.fixture(scope="module")
def parity_doc(digits32, tmp_path_factory):
    """``parity.json`` of a real check: a digits ViT's fp32 and int8 ONNX exports and a broken fp32 one."""
    from test_testing import digits_vit

    from edgevit.backends import get_backend
    from edgevit.data import calibration_batch
    from edgevit.export import Artifact
    from edgevit.parity import ParityConfig, check

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("html")
    model = digits_vit(digits32)
    broken = type(model)(model.cfg)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        w = broken.blocks[0].mlp.fc2.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.01 * w.std())
    broken.eval()
    images = np.stack([digits32.val[i][0].numpy() for i in range(120)])  # [120, 3, 32, 32]
    labels = np.array([int(digits32.val[i][1]) for i in range(120)])
    example = torch.from_numpy(images[:1])
    onnx = get_backend("onnx")
    arts = [Artifact("onnx", "fp32", out / "onnx_fp32.onnx"), Artifact("onnx", "int8", out / "onnx_int8.onnx"),
            Artifact("onnx", "fp32", out / "broken_fp32.onnx")]  # fmt: skip
    onnx.convert(model, example, arts[0].path, "fp32")
    arts[1].info = onnx.convert(model, example, arts[1].path, "int8", calib=calibration_batch(digits32.train, 64))
    onnx.convert(broken, example, arts[2].path, "fp32")

    @torch.no_grad()
    def reference(x):
        return model(torch.from_numpy(x)).numpy()

    report = check(arts, images, labels, reference, ParityConfig(threads=1, warmup=2, runs=10), progress=False)
    torch.set_num_threads(threads)
    doc = report.to_json()
    doc["artifacts"][2]["explain"] = per_layer_errors(model, broken, torch.from_numpy(images[:32]), 1e-3)
    return doc, out


def test_html_has_summary_table_plots_and_escapes_text(parity_doc):
    doc, _ = parity_doc
    good, int8, bad = doc["artifacts"]
    assert good["passed"] and bad["passed"] is False and int8["runnable"]
    assert bad["explain"]["first_divergent"]["module"] == "blocks.0.mlp.fc2"  # the perturbed layer
    page = render_html(doc)
    assert page.startswith("<!DOCTYPE html>") and 'id="verdict">FAIL<' in page
    n_pass = sum(a["passed"] is True for a in doc["artifacts"])
    assert f"{n_pass} passed, {3 - n_pass} failed, 0 not run here" in page
    rows = re.findall(r'<tr class="artifact row-(\w+)">', page)
    assert rows == ["pass", "pass" if int8["passed"] else "fail", "fail"]  # one row per artifact, in order
    assert "onnxruntime quantize_static" in page  # the int8 row names its quantizer
    assert f"{doc['reference']['top1']:.2f}" in page and f"{good['cosine']:.6f}" in page
    plots = re.findall(r'<figure class="plot" id="plot-([\w-]+)"><img alt="[^"]*" src="data:image/png;base64,', page)
    assert plots == ["latency", "accuracy-size", "explain-2"]
    assert "onnx fp32 [broken_fp32.onnx]; first divergent layer: blocks.0.mlp.fc2 (Linear)" in page
    assert '<td class="text">blocks.0.mlp.fc2</td><td class="text">Linear</td>' in page
    assert page.count(">first divergent</td>") == 1 and ">over</td>" in page  # layers after it are flagged
    # every string from the document is escaped: a failure message cannot inject markup
    evil = copy.deepcopy(doc)
    evil["artifacts"][2]["failures"].append('<script>alert("x")</script>')
    evil["artifacts"][2]["quantizer"] = "<b>q</b>"
    page = render_html(evil)
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;q&lt;/b&gt;" in page


def test_html_tolerates_old_and_partial_documents(parity_doc, tmp_path):
    """A schema-1 document (no top5/PSNR/KL/memory/profile) and rows that did not run still render."""
    doc, _ = parity_doc
    old = copy.deepcopy(doc)
    for a in old["artifacts"]:
        for k in ("top5", "psnr_db", "kl_div", "peak_memory_mb", "explain", "execution", "quantizer"):
            a.pop(k, None)
        a["latency_ms"] = {k: a["latency_ms"][k] for k in ("median", "p90")}
    old["reference"].pop("top5", None)
    old["device"] = {"name": "host"}
    ex = doc["artifacts"][2]["explain"]  # an explain section with the divergence finder's optional fields
    old["artifacts"][2]["explain"] = ex | {"note": "<delegate> is opaque", "images": 16, "unmapped": ["blocks.0.ls1"]}
    old["artifacts"][2]["explain"]["layers"] = [dict(ex["layers"][0], carried=False), *ex["layers"][1:]]
    old["artifacts"].append({"backend": "coreml", "precision": "fp16", "path": "m.mlpackage", "size_bytes": None,
                             "runnable": False, "reason": "needs macOS", "passed": None, "failures": []})  # fmt: skip
    path = write_html(old, tmp_path / "report.html")
    page = path.read_text()
    assert "not run: needs macOS" in page and "1 not run here" in page
    assert re.findall(r'id="plot-([\w-]+)"', page) == ["latency", "accuracy-size", "explain-2"]
    assert "&lt;delegate&gt; is opaque" in page and "Compared over 16 images" in page and "blocks.0.ls1" in page
    assert ">over, not carried on</td>" in page
    assert not list(tmp_path.glob(".report.html*"))  # atomic: no temp file left behind
    empty = render_html({"artifacts": []})  # nothing ran: still a page, no plots
    assert 'id="artifacts"' in empty and "No plottable numbers" in empty


@pytest.fixture
def browser() -> str:
    """The headless Chromium binary, or a skip that says how to install one (before any other setup)."""
    found = headless_browser()
    if found is None:
        pytest.skip(INSTALL_HINT)
    return found


def test_report_html_in_headless_browser(browser, parity_doc, tmp_path):
    """The page opens from file:// with no server: the screenshot is a real PNG with the plots drawn, and the
    browser's DOM has the artifact table and the three inline plots."""
    from PIL import Image

    doc, _ = parity_doc
    page = write_html(doc, tmp_path / "report.html")
    url = page.resolve().as_uri()
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    cmd = [browser, *flags, f"--screenshot={shot}", "--window-size=1600,2200", "--dump-dom", url]  # one launch
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    dom = proc.stdout

    img = Image.open(shot).convert("RGB")
    assert img.size == (1600, 2200)
    px = np.asarray(img).reshape(-1, 3).astype(np.int32)  # [H * W, RGB]
    assert len(np.unique(px[:, 0] << 16 | px[:, 1] << 8 | px[:, 2])) > 50  # not a blank page
    blue = np.all(np.abs(px - [0x1F, 0x77, 0xB4]) <= 12, axis=1).sum()  # matplotlib's C0: plots only
    assert blue > 2000, f"only {blue} plot-blue pixels: the inline plots did not render"

    assert '<table id="artifacts">' in dom
    assert len(re.findall(r'<tr class="artifact row-\w+">', dom)) == 3
    assert len(re.findall(r'<img alt="[\w-]+ plot" src="data:image/png;base64,', dom)) == 3
    assert 'id="verdict">FAIL</span>' in dom


def test_write_report_puts_report_html_beside_report_md(parity_doc, tmp_path):
    from edgevit.parity import ParityReport, write_report

    doc, _ = parity_doc
    for device, name in [({"name": "host", "emulated": False}, "report.html"),
                         ({"name": "iphone", "emulated": False}, "report-iphone.html")]:  # fmt: skip
        report = ParityReport(doc["num_images"], doc["threads"], doc["reference"], doc["artifacts"], device)
        _, md = write_report(report, tmp_path)
        page = (tmp_path / name).read_text()
        assert md.with_suffix(".html").name == name and page.count('<tr class="artifact row-') == 3
    assert "<title>Parity report: iphone</title>" in page


@pytest.mark.slow
def test_quickstart_run_writes_report_html(quickstart_run):
    """`edgevit run` leaves report.html beside report.md with every artifact of the manifest and the plots."""
    import json

    doc = json.loads((quickstart_run / "parity.json").read_text())
    page = (quickstart_run / "report.html").read_text()
    assert page.count('<tr class="artifact row-') == len(doc["artifacts"]) >= 8
    assert re.findall(r'id="plot-(latency|accuracy-size)"', page) == ["latency", "accuracy-size"]
    assert ('id="verdict">PASS<' in page) == doc["passed"]
