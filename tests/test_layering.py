"""The package reads as the pipeline: layers import downward only, and no module reaches into
another module's private names (parsed from the source, function-level imports included)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "addk_interp"
# lowest first; a module may import its own layer and the layers below it
LAYERS = ["core", "organism", "models", "hooks", "localize", "analyses", "report", "pipeline", "cli"]
BASE = {"addk_interp._version", "addk_interp._lazy"}


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(mod: str) -> int:
    parts = mod.split(".")
    if mod in BASE or len(parts) == 1:
        return -1
    return LAYERS.index(parts[1])


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    me = _module(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                base = me.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, []


FILES = sorted(PKG.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for f in FILES:
        m = _module(f)
        parts = m.split(".")
        assert len(parts) == 1 or m in BASE or parts[1] in LAYERS, f"{m} is in no layer"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_downward_and_never_to_private_names(path):
    me = _module(path)
    mine = _layer(me)
    for line, mod, names in _imports(path):
        if not mod.startswith("addk_interp"):
            continue
        if mod == "addk_interp":
            assert me in BASE or me == "addk_interp", f"{me}:{line} imports the package root"
            continue
        if me == "addk_interp":  # the root is the facade: it re-exports from every layer
            continue
        assert _layer(mod) <= mine, f"{me}:{line} imports {mod} from a higher layer"
        if mod != me:
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{me}:{line} imports private {private} from {mod}"


def test_no_private_attribute_reach_into_other_modules_or_objects():
    """``alias._name`` on an imported addk_interp module, and the known object reaches that the
    architecture removed (``model._…``, ``run._…``, ``run.__dict__``)."""
    bad = []
    for f in FILES:
        tree = ast.parse(f.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("addk_interp"):
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name.startswith("addk")}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and (node.value.id in aliases or node.value.id in ("model", "run", "ctx"))
            ):
                bad.append(f"{_module(f)}:{node.lineno} {node.value.id}.{node.attr}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "__dict__"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("model", "run", "ctx")
            ):
                bad.append(f"{_module(f)}:{node.lineno} {node.value.id}.__dict__")
    assert not bad, bad


def test_the_layering_check_catches_an_upward_import(tmp_path):
    # the check itself can fail: a core module importing the pipeline is flagged
    fake = PKG / "core" / "errors.py"
    src = fake.read_text() + "\nfrom addk_interp.pipeline.run import Run\n"
    p = tmp_path / "addk_interp" / "core" / "errors.py"
    p.parent.mkdir(parents=True)
    p.write_text(src)
    tree_imports = [m for _, m, _ in _imports(fake)]
    assert "addk_interp.pipeline.run" not in tree_imports
    ups = [m for _, m, _ in _imports_of_text(src) if m.startswith("addk_interp.")]
    assert any(_layer(m) > _layer("addk_interp.core.errors") for m in ups)


def _imports_of_text(text):
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module or "", [a.name for a in node.names]
