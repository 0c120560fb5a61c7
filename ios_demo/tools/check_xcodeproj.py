#!/usr/bin/env python3
"""Checks ios_demo/EdgeVitDemo.xcodeproj/project.pbxproj against the sources on disk (nothing here can run Xcode):

- every .swift file under EdgeVitDemo/ is a file reference compiled by the EdgeVitDemo target, and every .swift
  under EdgeVitDemoTests/ by the EdgeVitDemoTests target; no reference points at a missing file;
- the app target depends on the local EdgeVitCore package (relativePath EdgeVitCore, which has a Package.swift)
  and on ExecuTorch's Swift package at branch ``swiftpm-<version>``, the version of the Python executorch when one
  is installed (``--executorch-version`` or the interpreter in $EDGEVIT_PYTHON / .venv / python3).

Prints one line per problem and ``xcodeproj: N passed, M failed``; exits 1 on any problem.
Usage: check_xcodeproj.py [--project PATH] [--executorch-version X.Y.Z]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

IOS = Path(__file__).resolve().parent.parent
TARGET_FOLDERS = {"EdgeVitDemo": "EdgeVitDemo", "EdgeVitDemoTests": "EdgeVitDemoTests"}
EXECUTORCH_URL = re.compile(r"^https://github\.com/pytorch/executorch(\.git)?$")


class PlistError(ValueError):
    pass


def parse_openstep(text: str) -> object:
    """A minimal parser for Xcode's OpenStep-style plist (dicts, arrays, bare and quoted strings, comments)."""
    token = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[{}()=;,]|[^\s{}()=;,"]+', re.S)
    tokens = [t for t in token.findall(text) if t.strip() and not t.startswith(("//", "/*"))]
    pos = 0

    def value() -> object:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "{":
            d = {}
            while tokens[pos] != "}":
                k = value()
                if tokens[pos] != "=":
                    raise PlistError(f"expected '=' after key {k!r}")
                pos += 1
                d[k] = value()
                if tokens[pos] != ";":
                    raise PlistError(f"expected ';' after value of {k!r}")
                pos += 1
            pos += 1
            return d
        if t == "(":
            items = []
            while tokens[pos] != ")":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if t.startswith('"'):
            return bytes(t[1:-1], "utf-8").decode("unicode_escape")
        return t

    try:
        return value()
    except IndexError as e:
        raise PlistError("unexpected end of file") from e


def installed_executorch(explicit: str | None) -> tuple[str | None, str]:
    """The Python executorch version to match, and where it came from."""
    if explicit:
        return explicit, "--executorch-version"
    candidates = [os.environ.get("EDGEVIT_PYTHON"), str(IOS.parent / ".venv" / "bin" / "python"), "python3"]
    for py in filter(None, candidates):
        try:
            out = subprocess.run(
                [py, "-c", "import importlib.metadata as m; print(m.version('executorch'))"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip(), py
    return None, "no Python with executorch found"


def pyproject_executorch_spec() -> str | None:
    """The ``executorch`` version specifier in the repository's pyproject.toml (e.g. ``>=1.5,<1.6``)."""
    try:
        m = re.search(r'"executorch\s*([<>=!~][^"]*)"', (IOS.parent / "pyproject.toml").read_text())
    except OSError:
        return None
    return m.group(1).strip() if m else None


def satisfies(version: str, spec: str) -> bool:
    """Whether dotted ``version`` meets every clause of ``spec`` (>=, <=, >, <, ==)."""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v))

    ops = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a == b,
    }
    for clause in spec.split(","):
        m = re.match(r"\s*(>=|<=|==|>|<)\s*([\d.]+)\s*$", clause)
        if not m or not ops[m.group(1)](key(version), key(m.group(2))):
            return False
    return True


def check(project_path: Path, executorch_version: str | None) -> tuple[list[str], list[str]]:
    passed: list[str] = []
    failed: list[str] = []
    try:
        root = parse_openstep(project_path.read_text())
    except (OSError, PlistError) as e:
        return passed, [f"{project_path}: cannot parse: {e}"]
    objects: dict = root["objects"]
    project = objects[root["rootObject"]]

    # Walk the group tree: every file reference's path relative to ios_demo/.
    paths: dict[str, str] = {}

    def walk(group_id: str, prefix: str) -> None:
        g = objects[group_id]
        here = prefix
        if g.get("sourceTree") == "<group>" and g.get("path"):
            here = f"{prefix}/{g['path']}" if prefix else g["path"]
        for child in g.get("children", []):
            c = objects[child]
            if c["isa"] == "PBXGroup":
                walk(child, here)
            elif c["isa"] == "PBXFileReference" and c.get("sourceTree") == "<group>":
                paths[child] = f"{here}/{c['path']}" if here else c["path"]

    walk(project["mainGroup"], "")
    for rel in paths.values():
        if not (IOS / rel).exists():
            failed.append(f"project.pbxproj references {rel}, which does not exist")

    targets = {objects[t]["name"]: objects[t] for t in project["targets"]}
    for target_name, folder in TARGET_FOLDERS.items():
        target = targets.get(target_name)
        if target is None:
            failed.append(f"project.pbxproj has no target {target_name}")
            continue
        compiled = set()
        for phase in target["buildPhases"]:
            if objects[phase]["isa"] == "PBXSourcesBuildPhase":
                for bf in objects[phase]["files"]:
                    ref = objects[bf].get("fileRef")
                    if ref in paths:
                        compiled.add(paths[ref])
        on_disk = sorted(str(p.relative_to(IOS)) for p in (IOS / folder).rglob("*.swift"))
        if not on_disk:
            failed.append(f"{folder}/ has no .swift sources")
        for rel in on_disk:
            if rel in compiled:
                passed.append(f"{rel} compiled by {target_name}")
            else:
                failed.append(
                    f"{rel} is not in project.pbxproj's {target_name} Sources phase: add it in Xcode "
                    "(or run ios_demo/tools/gen_xcodeproj.py)"
                )

    scheme = project_path.parent / "xcshareddata" / "xcschemes" / "EdgeVitDemo.xcscheme"
    try:
        blueprints = set(re.findall(r'BlueprintIdentifier = "([0-9A-F]+)"', scheme.read_text()))
    except OSError:
        blueprints = set()
    wanted = {t_id for t_id in project["targets"]}
    if wanted and wanted <= blueprints:
        passed.append("the shared EdgeVitDemo scheme builds the app and tests EdgeVitDemoTests")
    else:
        failed.append(f"{scheme.name} is missing or does not name both targets of project.pbxproj")

    packages = {p: objects[p] for p in project.get("packageReferences", [])}
    app = targets.get("EdgeVitDemo", {})
    products = {objects[d]["productName"]: objects[d].get("package") for d in app.get("packageProductDependencies", [])}
    local = [
        p
        for p, o in packages.items()
        if o["isa"] == "XCLocalSwiftPackageReference" and o.get("relativePath") == "EdgeVitCore"
    ]
    if local and (IOS / "EdgeVitCore" / "Package.swift").is_file() and products.get("EdgeVitCore") == local[0]:
        passed.append("EdgeVitDemo links the local EdgeVitCore package")
    else:
        failed.append("EdgeVitDemo does not link product EdgeVitCore of the local package at relativePath EdgeVitCore")

    remote = [
        (p, o)
        for p, o in packages.items()
        if o["isa"] == "XCRemoteSwiftPackageReference" and EXECUTORCH_URL.match(o.get("repositoryURL", ""))
    ]
    if not remote:
        failed.append("no XCRemoteSwiftPackageReference to https://github.com/pytorch/executorch")
    else:
        pkg_id, pkg = remote[0]
        req = pkg.get("requirement", {})
        branch = req.get("branch", "") if req.get("kind") == "branch" else ""
        if not branch.startswith("swiftpm-"):
            failed.append(f"ExecuTorch package requirement {req} is not a swiftpm-<version> branch")
        elif executorch_version is None:
            spec = pyproject_executorch_spec()
            ok = spec is not None and satisfies(branch.removeprefix("swiftpm-"), spec)
            (passed if ok else failed).append(
                f"ExecuTorch package at {branch} {'is within' if ok else 'is outside'} pyproject's executorch "
                f"{spec} (no Python executorch installed to match exactly)"
            )
        elif branch != f"swiftpm-{executorch_version}":
            failed.append(
                f"ExecuTorch package branch {branch} does not match Python executorch "
                f"{executorch_version}: use swiftpm-{executorch_version}"
            )
        else:
            passed.append(f"ExecuTorch package at {branch} matches Python executorch {executorch_version}")
        if products.get("executorch") != pkg_id or products.get("backend_xnnpack") != pkg_id:
            failed.append("EdgeVitDemo does not link ExecuTorch products executorch and backend_xnnpack")
        else:
            passed.append("EdgeVitDemo links executorch and backend_xnnpack")
    return passed, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=IOS / "EdgeVitDemo.xcodeproj" / "project.pbxproj")
    parser.add_argument("--executorch-version")
    args = parser.parse_args()
    version, source = installed_executorch(args.executorch_version)
    passed, failed = check(args.project, version)
    for line in failed:
        print(f"FAIL {line}")
    print(f"xcodeproj: {len(passed)} passed, {len(failed)} failed (executorch version from {source})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
