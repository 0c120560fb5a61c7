"""Parse Kotlin sources with the tree-sitter Kotlin grammar and fail on any syntax error.

The app/ layer needs the Android SDK to compile, which a Linux CI machine does not have; parsing it catches what
an edit can break without one (a lost brace, a half-written expression). Usage:

    python android_demo/tools/parse_kotlin.py FILE_OR_DIR...

Prints one line per error (``path:line:col: syntax error near '...'``) and exits 1 if there are any, 2 when the
grammar is not installed (``pip install tree-sitter tree-sitter-kotlin``, part of edgevit's ``dev`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _parser():
    try:
        import tree_sitter
        import tree_sitter_kotlin
    except ImportError as e:
        print(
            f"android app parse: ERROR: {e.name} is not installed; run `pip install tree-sitter tree-sitter-kotlin` "
            "(or `pip install -e '.[dev]'`)",
            file=sys.stderr,
        )
        sys.exit(2)
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_kotlin.language()))


def syntax_errors(parser, path: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` ``path:line:col: ...`` lines, one per ERROR or MISSING node of ``path``'s parse tree."""
    source = path.read_bytes()
    tree = parser.parse(source)
    errors: list[str] = []
    stack = [tree.root_node]
    while stack and len(errors) < limit:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            line, col = node.start_point
            near = source[node.start_byte : min(node.end_byte, node.start_byte + 40)].decode(errors="replace")
            what = f"missing {node.type}" if node.is_missing else f"syntax error near {near.strip()!r}"
            errors.append(f"{path}:{line + 1}:{col + 1}: {what}")
            continue
        if node.has_error:
            stack.extend(reversed(node.children))
    return errors


def main(argv: list[str]) -> int:
    """Parse every ``.kt``/``.kts`` file under ``argv``; 0 when all parse, 1 otherwise."""
    files = sorted({f for a in argv for f in ([Path(a)] if Path(a).is_file() else Path(a).rglob("*.kt*"))})
    files = [f for f in files if f.suffix in (".kt", ".kts") and "build" not in f.parts]
    if not files:
        print(f"android app parse: ERROR: no Kotlin files under {' '.join(argv)}", file=sys.stderr)
        return 1
    parser = _parser()
    bad = [line for f in files for line in syntax_errors(parser, f)]
    for line in bad:
        print(line)
    print(f"android app parse: {len(files)} Kotlin files, {len(bad)} syntax errors (tree-sitter-kotlin)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
