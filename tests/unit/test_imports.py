"""Imports sit at the top of the module, where readers and import-linter see them.

Only ``cli/`` imports lazily as a rule (``edgefn --help`` must answer fast). Anywhere else an
import inside a function needs a reason, written as a comment that starts with ``# lazy:`` on the
line before it (a comment block whose first line is ``# lazy: ...`` counts) or on the same line.
One comment covers a run of consecutive import statements.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import edgefn

PACKAGE = Path(edgefn.__file__).parent

# Files other parts of issue #16 are rewriting at the same time; they fix their own imports.
# Empty this set once that work is merged (test_pending_files_still_need_the_exemption says when).
PENDING: set[str] = set()


@dataclass(frozen=True, slots=True)
class FunctionImport:
    path: str  # relative to the package directory
    line: int
    statement: str
    reason: str | None  # the text after "# lazy:", or None when there is none


def _imports_in_functions(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def _reason(lines: list[str], node: ast.Import | ast.ImportFrom, ends: set[int]) -> str | None:
    """The ``# lazy:`` reason that covers ``node``: same line, or the comment block above it."""
    marker = "# lazy:"
    if marker in lines[node.lineno - 1]:
        return lines[node.lineno - 1].split(marker, 1)[1].strip()
    above = node.lineno - 1  # 1-based number of the line above
    while above in ends:  # skip the import statements of the same run
        while above >= 1 and not lines[above - 1].lstrip().startswith(("import ", "from ")):
            above -= 1  # the first line of a statement that spans several lines
        above -= 1
    first = None
    while above >= 1 and lines[above - 1].lstrip().startswith("#"):
        first = lines[above - 1].strip()
        above -= 1
    if first is None or not first.startswith(marker):
        return None
    return first.removeprefix(marker).strip()


def function_imports() -> list[FunctionImport]:
    """Every import statement inside a function of ``edgefn``, outside ``cli/``."""
    out = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE).as_posix()
        if rel.startswith("cli/"):
            continue
        source = file.read_text()
        lines = source.splitlines()
        nodes = _imports_in_functions(ast.parse(source, filename=str(file)))
        ends = {n.end_lineno for n in nodes if n.end_lineno is not None}
        for node in nodes:
            reason = _reason(lines, node, ends)
            out.append(FunctionImport(rel, node.lineno, ast.unparse(node), reason))
    return out


def test_every_import_inside_a_function_says_why_it_is_lazy() -> None:
    missing = [
        f"src/edgefn/{i.path}:{i.line}: {i.statement}"
        for i in function_imports()
        if i.path not in PENDING and not i.reason
    ]
    assert not missing, (
        "move these imports to the top of their module, or say why one must stay lazy with a "
        "'# lazy: <reason>' comment on the line before it:\n" + "\n".join(missing)
    )


def test_pending_files_still_need_the_exemption() -> None:
    """A file in PENDING that exists and has no unexplained lazy import leaves the list."""
    unexplained = {i.path for i in function_imports() if not i.reason}
    stale = sorted(p for p in PENDING if p not in unexplained)
    assert not stale, f"remove from PENDING in {__file__}: {stale}"


def test_the_checker_sees_lazy_imports_and_their_reasons() -> None:
    source = (
        "import os\n"
        "def f():\n"
        "    import json\n"
        "def g():\n"
        "    # lazy: numpy is heavy and\n"
        "    # only g needs it.\n"
        "    import numpy\n"
        "    from edgefn import (\n"
        "        Request,\n"
        "    )\n"
        "    import array\n"
        "\n"
        "    import math\n"
        "def h():\n"
        "    import csv  # lazy: same-line reason\n"
        "class C:\n"
        "    def m(self):\n"
        "        def inner():\n"
        "            import zlib\n"
    )
    lines = source.splitlines()
    nodes = _imports_in_functions(ast.parse(source))
    ends = {n.end_lineno for n in nodes if n.end_lineno is not None}
    found = {ast.unparse(n).split()[1]: _reason(lines, n, ends) for n in nodes}
    assert found == {
        "json": None,
        "numpy": "numpy is heavy and",
        "edgefn": "numpy is heavy and",
        "array": "numpy is heavy and",
        "math": None,  # a blank line ends the run
        "csv": "same-line reason",
        "zlib": None,
    }
