"""Every import in ``src/adpo`` points down the layer diagram (docs/development/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "adpo"

# package (or module) -> layer; a module may import its own package and lower layers only
LAYERS = {
    "adpo.losses": 0,
    "adpo.anchors": 1,
    "adpo.schedules": 1,
    "adpo.logprobs": 1,
    "adpo.metrics": 1,
    "adpo._io": 1,
    "adpo.data": 2,
    "adpo.rewards": 3,
    "adpo._compat": 4,
    "adpo.trainers": 5,
    "adpo.testing": 6,
    "adpo.integrations": 7,
    "adpo.experiments": 7,
    "adpo.tiny": 7,  # kept for old imports: re-exports adpo.testing and adpo.data
    "adpo.cli": 8,
}


def _unit(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return name
    raise AssertionError(
        f"{module} has no layer; add it to LAYERS and docs/development/architecture.md"
    )


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("adpo.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "adpo":  # `from adpo import __version__`, `from adpo import cli`
                out += [f"adpo.{a.name}" for a in node.names if not a.name.startswith("__")]
            elif node.module.startswith("adpo."):
                out.append(node.module)
    return out


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name != "adpo":
            yield name, path


def test_every_import_points_down():
    wrong = []
    for name, path in _modules():
        unit = _unit(name)
        for target in _imports(path):
            t = _unit(target)
            if t != unit and LAYERS[t] >= LAYERS[unit]:
                wrong.append(f"{name} (layer {LAYERS[unit]}) imports {target} (layer {LAYERS[t]})")
    assert not wrong, "\n".join(wrong)


def test_core_layers_do_not_depend_on_the_demo_building_blocks():
    core = [n for n, _ in _modules() if LAYERS[_unit(n)] <= LAYERS["adpo.trainers"]]
    assert core
    for name, path in _modules():
        if name in core:
            assert not any(t.startswith(("adpo.testing", "adpo.tiny")) for t in _imports(path)), (
                name
            )
