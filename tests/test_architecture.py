"""The package's shape: imports go one way, module sizes stay readable, the library never imports flows.

Read from the source with ``ast``, so a new import that points back (or a new module no layer names)
fails here rather than in a reader's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sanitize"

# Layers, lowest first: a module imports only modules of lower layers (and its own package's).
# The floor is what every stage stands on; the stages follow a sample's journey: ingested into the
# store, read by the reference model for its features, detected, quarantined, exported as a
# (provisional) clean version, then reviewed, where an approval exports again; above them the
# readers of finished versions, the conductor, and the front ends.
LAYERS: list[tuple[str, ...]] = [
    ("sanitize.errors", "sanitize.config", "sanitize.faults"),
    ("sanitize.store", "sanitize.catalog"),
    ("sanitize.processes",),
    ("sanitize.workspace", "sanitize.versions", "sanitize.migrate"),
    ("sanitize.ingest",),
    ("sanitize.demo", "sanitize.provenance"),
    ("sanitize.models", "sanitize.runs"),
    ("sanitize.features", "sanitize.training"),
    ("sanitize.detect",),
    ("sanitize.quarantine", "sanitize.evaluate"),
    ("sanitize.export",),
    ("sanitize.review",),
    ("sanitize.data", "sanitize.lineage", "sanitize.schedule", "sanitize.cleanup", "sanitize.verify"),
    ("sanitize.pipeline",),
    ("sanitize.web",),
    ("sanitize.cli",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# Imports inside a function, each for a stated reason (start-up time of unrelated commands).
DEFERRED_IMPORTS = {
    ("sanitize.cli.cleaning", "sanitize.pipeline"),  # torch and the detectors: ~2 s of `sanitize --help`
    ("sanitize.cli.review", "sanitize.web.app"),  # FastAPI and its templates, only for `sanitize review`
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return out


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "sanitize":  # `from sanitize import runs`
            return [f"sanitize.{a.name}" for a in node.names]
        return [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return []


def _layer_of(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYER, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYER[prefix]
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it")


MODULES = {name: tree for name, tree in _modules().items() if name != "sanitize"}  # the package's docstring


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_to_lower_layers_only(module: str) -> None:
    home, layer = _layer_of(module)
    for node in ast.walk(MODULES[module]):
        for target in _imported(node):
            if not target.startswith("sanitize.") or target.startswith(home + ".") or target == home:
                continue
            other, other_layer = _layer_of(target)
            assert other_layer < layer, f"{module} imports {target}: {other} is not below {home}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_library_never_imports_flows(module: str) -> None:
    for node in ast.walk(MODULES[module]):
        for target in _imported(node):
            assert target.split(".")[0] != "flows", f"{module} imports {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_of_the_package_sit_at_the_top_unless_deferred_for_a_reason(module: str) -> None:
    for fn in ast.walk(MODULES[module]):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            for target in _imported(node):
                if target.startswith("sanitize"):
                    assert (module, target) in DEFERRED_IMPORTS, f"{module}.{fn.name} imports {target} inside it"


def test_modules_stay_readable() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in ROOT.rglob("*.py")}
    assert {str(p): n for p, n in sizes.items() if n > 500} == {}
    assert sizes[ROOT / "pipeline.py"] < 350  # the conductor only: each stage's body lives in its module


def test_the_layer_table_is_checked_against_real_modules() -> None:
    # A layer named here but missing from the package would make the table lie about the code.
    assert set(LAYER) <= {m for m in MODULES} | {m.rsplit(".", 1)[0] for m in MODULES}
    assert _layer_of("sanitize.detect.whitened") == ("sanitize.detect", LAYER["sanitize.detect"])
    with pytest.raises(AssertionError, match="in no layer"):
        _layer_of("sanitize.nowhere")
