"""The golden runner contract implemented by the NumPy reference: ``python -m edgevit.apps.runner --bundle DIR
--cases DIR --out FILE.json`` (bundle.md, "Golden runner"). The Kotlin and Swift cores ship runners with the same
command line; this one lets ``edgevit app-check`` be tested here, and is what ``--runner python`` runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgevit import __version__
from edgevit.apps import pipeline
from edgevit.apps.bundle import read_bundle
from edgevit.apps.golden import expected_logits, read_cases
from edgevit.utils import EdgeVitError, write_json_atomic

NAME = f"edgevit-numpy {__version__}"


def run_golden(bundle_dir: str | Path, cases_dir: str | Path, out: str | Path) -> Path:
    """Compute every case's input tensor for every model of the bundle (written beside ``out`` as
    ``<case>__<model>.out.bin``) and its top-k from the case's expected ``raw_output``/``logits``; write ``out``.

    Raises:
        EdgeVitError: a malformed bundle or cases file.
    """
    bundle = read_bundle(bundle_dir)
    cases, doc = read_cases(cases_dir)
    k = int(doc["top_k"])
    entries = {c["id"]: c.get("expected", {}) for c in doc["cases"]}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        for m in bundle.models:
            x = pipeline.model_input(case.frame, bundle.preprocess, m.input)
            name = f"{case.id}__{m.key}.out.bin"
            (out.parent / name).write_bytes(np.ascontiguousarray(x, x.dtype.newbyteorder("<")).tobytes())
            z = expected_logits(entries[case.id].get(m.key, {}), m.output)
            top = [] if z is None else [[i, p] for i, p in pipeline.top_k(z, k)]
            results.append({"id": case.id, "model": m.key, "input_file": name, "top_k": top})
    return write_json_atomic(out, {"runner": NAME, "results": results})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 0 on success, 2 with a one-line message on bad input."""
    parser = argparse.ArgumentParser(prog="python -m edgevit.apps.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder (bundle.json)")
    parser.add_argument("--cases", required=True, help="cases folder (cases.json and the .raw buffers)")
    parser.add_argument("--out", required=True, help="results JSON; the .out.bin tensors go beside it")
    args = parser.parse_args(argv)
    try:
        run_golden(args.bundle, args.cases, args.out)
    except EdgeVitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
