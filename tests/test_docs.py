"""The documentation stays true to the code: generated references up to date, no broken links, names that resolve,
a short README, and a parity.json page that documents every key a report writes."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import typer.main
from pydantic import BaseModel

from edgevit.cli import app
from edgevit.export import Artifact
from edgevit.parity import SCHEMA_VERSION, ParityConfig, check
from edgevit.parity.devices import get_device
from edgevit.recipe import Recipe, RecoverConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 150
# pages other branches are writing; a link to one is accepted only while it does not exist yet (once it lands, its
# anchors are checked like any other page's)
PENDING = {DOCS / "guides" / "demo-apps.md"}
# pages other branches own: they may describe code that lands with them, so only their links are checked here
OWNED_ELSEWHERE = {DOCS / "reference" / "bundle.md", DOCS / "guides" / "demo-apps.md", *DOCS.glob("design/*.md")}


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _gen():
    """docs/gen_reference.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strip_fences(text: str) -> str:
    """``text`` without fenced code blocks (a ``#`` line inside one is not a heading, a link not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code (a link inside either is an example, not a link)."""
    return re.sub(r"`[^`\n]*`", "", _strip_fences(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]*>", lambda m: m.group(0)[1:-1] if m.group(0).startswith("<") else "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page`` (duplicates numbered as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _strip_fences(page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    """``page: target (why)`` for each relative Markdown link whose file or heading anchor does not exist."""
    bad = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", _strip_code(page.read_text())):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if dest in PENDING and not dest.exists():
                continue
            if not dest.exists():
                bad.append(f"{page.relative_to(root)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{page.relative_to(root)}: {target} (no heading with that anchor)")
    return bad


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; keep it <= {README_MAX_LINES}, move detail to docs/"
    )


def test_generated_references_are_up_to_date():
    stale = [str(p.relative_to(ROOT)) for p in _gen().stale()]
    assert not stale, f"{stale} out of date with the code: run `PYTHONPATH=. python docs/gen_reference.py`"


def _section_models(tp, seen: set) -> None:
    """Every pydantic model reachable from annotation ``tp`` (through unions, lists, dicts), into ``seen``."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.add(tp)
            for f in tp.model_fields.values():
                _section_models(f.annotation, seen)
        return
    for arg in typing.get_args(tp):
        _section_models(arg, seen)


def test_recipe_reference_lists_every_key():
    """Every field of every section model reachable from Recipe has a row (found independently of the generator)."""
    text = (DOCS / "reference" / "recipe.md").read_text()
    keys = re.findall(r"^\| `([^`]+)` \|", text, flags=re.M)
    last = {k.rsplit(".", 1)[-1] for k in keys}
    models: set = set()
    _section_models(Recipe, models)
    missing = [
        f"{m.__name__}.{name}"
        for m in models
        for name, f in m.model_fields.items()
        if (f.alias or name) not in last and not (m is RecoverConfig and name == "train")  # flat in YAML
    ]
    assert not missing, f"recipe keys without a row in docs/reference/recipe.md: {missing}"
    assert "export.targets[].layout" in keys and "parity.tolerances.<precision>.min_cosine" in keys


def test_cli_reference_lists_every_command():
    text = (DOCS / "reference" / "cli.md").read_text()
    group = typer.main.get_command(app)
    for name in group.list_commands(None):
        assert f"## `edgevit {name}`" in text
    assert "## `edgevit target setup`" in text and "--mirror" in text


def test_links_resolve():
    bad = broken_links(_pages())
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page.write_text("[ok](other.md#a-section) [gone](missing.md) [no anchor](other.md#nope) `[code](x.md)`\n")
    bad = broken_links([page], root=tmp_path)
    assert bad == ["page.md: missing.md (no such file)", "page.md: other.md#nope (no heading with that anchor)"]


def test_slug_matches_github():
    assert slug("Float vs int8 at 224 px, ViT-S/16") == "float-vs-int8-at-224-px-vit-s16"
    assert slug("`parity.tolerances.<precision>`") == "paritytolerancesprecision"
    assert slug("Does distillation or SAM help a small ViT?") == "does-distillation-or-sam-help-a-small-vit"


def _own_pages() -> list[Path]:
    return [p for p in _pages() if p not in OWNED_ELSEWHERE]


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def test_dotted_names_resolve():
    """``edgevit.x.y`` in any page is a module or an attribute of one (catches moved or renamed APIs)."""
    bad = []
    for page in _own_pages():
        for span in _code_spans(page.read_text()):
            for name in re.findall(r"\bedgevit(?:\.[A-Za-z_]\w*)+", span):
                if not _resolves(name):
                    bad.append(f"{page.relative_to(ROOT)}: {name}")
    assert not bad, "names that do not resolve:\n" + "\n".join(sorted(set(bad)))


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_repository_paths_exist():
    """``edgevit/...``, ``tests/...``, ``recipes/...`` paths named in the docs exist (placeholders aside)."""
    bad = []
    for page in _own_pages():
        for span in _code_spans(page.read_text()):
            for path in re.findall(r"(?<![\w/.])((?:edgevit|tests|recipes|docs)/[\w./-]*\w)", span):
                if re.search(r"NAME|<|\*|\{", path) or "/" not in path:
                    continue
                if not (ROOT / path).exists() and not (ROOT / path.split("::")[0]).exists():
                    bad.append(f"{page.relative_to(ROOT)}: {path}")
    assert not bad, "paths that do not exist:\n" + "\n".join(sorted(set(bad)))


def test_python_examples_compile_and_import():
    """Each ```python block parses, and its ``from edgevit... import`` names exist."""
    bad = []
    for page in _own_pages():
        for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M):
            try:
                tree = ast.parse(block)
            except SyntaxError as e:
                bad.append(f"{page.relative_to(ROOT)}: {e}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgevit"):
                    module = importlib.import_module(node.module)
                    bad += [
                        f"{page.relative_to(ROOT)}: {node.module}.{a.name}"
                        for a in node.names
                        if not hasattr(module, a.name)
                    ]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------------ parity.json


@pytest.fixture(scope="module")
def parity_doc(tmp_path_factory) -> dict:
    """A real report: the reference runs, one artifact whose file is missing (a failed row with every key)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    weights = rng.standard_normal((3 * 8 * 8, 2)).astype(np.float32)

    def reference(x):
        return x.reshape(len(x), -1) @ weights

    missing = Artifact("onnx", "fp32", tmp_path_factory.mktemp("arts") / "missing.onnx")
    config = ParityConfig(runs=2, warmup=0)
    return check([missing], images, labels, reference, config, progress=False).to_json()


def _schema_page() -> str:
    return (DOCS / "reference" / "parity-json.md").read_text()


def test_parity_json_page_documents_every_key(parity_doc):
    page = _schema_page()
    keys = set(parity_doc) | set(parity_doc["reference"]) | set(parity_doc["reference"]["latency_ms"])
    keys |= set(parity_doc["artifacts"][0])
    for name in ("host", "android-midrange"):
        keys |= set(get_device(name).to_json())
    missing = sorted(k for k in keys if f'"{k}"' not in page)
    assert not missing, f"parity.json keys missing from docs/reference/parity-json.md: {missing}"


def test_parity_json_page_is_this_schema_version():
    page = _schema_page()
    assert f'"schema_version": {SCHEMA_VERSION},' in page
    assert f"## Schema (`schema_version` {SCHEMA_VERSION})" in page
    for version in range(1, SCHEMA_VERSION + 1):
        assert re.search(rf"^\| {version} \| \d{{4}}-\d\d-\d\d, commit [0-9a-f]{{7}} \|", page, flags=re.M), (
            f"schema history has no row for version {version}"
        )


def test_benchmarks_carry_provenance():
    """Every table section of docs/benchmarks.md says when, at which commit, on what host, with which versions."""
    text = (DOCS / "benchmarks.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    bad = []
    for s in sections:
        title, body = s.split("\n", 1)
        if not re.search(r"^\|.*\|$", body, flags=re.M):
            continue
        for field in ("Recorded", "Host", "Versions"):
            if field not in body and not (field == "Recorded" and "recorded 20" in body):
                bad.append(f"{title}: no {field}")
        if not re.search(r"commits? [0-9a-f]{7}", body):
            bad.append(f"{title}: no commit")
    assert not bad, "\n".join(bad)
