"""The package layering, read from the source (AST), not from what happens to be imported.

Rules (README, "Layout"):
- no import cycle between modules of jaxcam and msdnet_flax (imports inside functions count:
  they are how cycles used to be hidden);
- the library (everything in jaxcam outside ``jaxcam/cli/`` and ``jaxcam/studies/``) imports
  neither ``jaxcam.cli``, ``jaxcam.studies`` nor a model package; the one exception is the
  re-export shim ``jaxcam/analysis`` kept for old import paths;
- the model packages (msdnet_flax, efficientnet_flax) import nothing of jaxcam but
  ``jaxcam.extend``.

Each rule is also shown to fail on a violation planted in a copy of the tree.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxcam", "msdnet_flax", "efficientnet_flax")
# Model packages: they may use jaxcam.extend and nothing else of jaxcam.
MODEL_PACKAGES = ("msdnet_flax", "efficientnet_flax")
APPLICATION = ("jaxcam.cli", "jaxcam.studies")
# Old import paths kept as re-export shims of the application layer (README, "Layout").
SHIMS = frozenset({"jaxcam.analysis"})


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_graph(root: Path) -> dict[str, set[str]]:
    """Every module of PACKAGES under ``root`` -> the modules of PACKAGES it imports.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``.
    Relative imports are resolved. Parent packages a module import runs implicitly are not
    edges (every module would otherwise "import" its package's ``__init__``).
    """
    files = {_module_name(root, p): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                # `import a.b.c` imports a.b.c; keep the longest prefix that is one of our modules.
                parts = target.split(".")
                while parts and ".".join(parts) not in files:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    edges.add(".".join(parts))
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path) -> list[str]:
    """Every broken layering rule in the tree at ``root``, one line each."""
    graph = module_graph(root)
    problems = [f"import cycle: {' <-> '.join(c)}" for c in _cycles(graph)]
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            if any(_under(module, m) for m in MODEL_PACKAGES):
                if _under(target, "jaxcam") and not _under(target, "jaxcam.extend"):
                    problems.append(f"{module} imports {target}: a model package may import "
                                    "only jaxcam.extend")
            elif not any(_under(module, app) for app in APPLICATION) and module not in SHIMS:
                if any(_under(target, p) for p in (*MODEL_PACKAGES, *APPLICATION)):
                    problems.append(f"{module} imports {target}: the library must not import "
                                    "the application (jaxcam.cli, jaxcam.studies) or a model "
                                    "package")
    return problems


def test_the_tree_keeps_its_layers():
    assert violations(REPO) == []


def test_the_walk_sees_the_imports_it_must():
    graph = module_graph(REPO)
    assert "jaxcam.extend.conv_grad" in graph["msdnet_flax.training.step"]
    assert any(_under(t, "msdnet_flax") for t in graph["jaxcam.studies.exit_analysis.core"])


PLANTS = {
    "library imports the CLI": ("jaxcam/batch/_planted.py", "from jaxcam.cli import main\n",
                                "jaxcam.batch._planted imports jaxcam.cli"),
    "library imports msdnet_flax": ("jaxcam/_planted.py",
                                    "def f():\n    import msdnet_flax.model\n",
                                    "jaxcam._planted imports msdnet_flax.model"),
    "library imports a study": ("jaxcam/viz/_planted.py",
                                "from ..studies import exit_analysis\n",
                                "jaxcam.viz._planted imports jaxcam.studies.exit_analysis"),
    "msdnet_flax imports jaxcam's core": ("msdnet_flax/_planted.py",
                                          "from jaxcam import postprocess\n",
                                          "msdnet_flax._planted imports jaxcam.postprocess"),
    "a cycle": ("jaxcam/_planted.py", "def f():\n    from jaxcam import compat\n",
                "import cycle"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_violation_is_caught(plant, tmp_path):
    path, source, expected = PLANTS[plant]
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("assets"))
    if plant == "a cycle":  # compat imports the planted module back: compat <-> _planted
        compat = tmp_path / "jaxcam" / "compat.py"
        compat.write_text(compat.read_text() + "\nfrom jaxcam import _planted  # noqa\n")
    (tmp_path / path).write_text(source)
    assert violations(REPO) == []
    found = violations(tmp_path)
    assert any(expected in line for line in found), found
