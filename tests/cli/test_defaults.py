"""One source of defaults: the configs. ``adpo train`` builds what ``loss_config`` builds, and
the docs' tables (and the README's line) state the configs' defaults, read from the classes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _defaults(cls) -> dict:
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


def _classes():
    from trl import GRPOConfig

    from adpo.trainers import ADPOConfig, OPOConfig

    return {"GRPOConfig": GRPOConfig, "ADPOConfig": ADPOConfig, "OPOConfig": OPOConfig}


def test_adpo_train_builds_what_loss_config_builds():
    from adpo.cli.train import build_parser, parse_train_args
    from adpo.trainers import LOSSES, loss_config

    for loss in LOSSES:
        _, cfg = parse_train_args(
            ["--model", "m", "--dataset", "d", "--loss", loss, "--bf16", "false"]
        )
        ref = loss_config(loss, output_dir=cfg.output_dir, bf16=False)
        assert cfg.to_dict() == ref.to_dict(), loss
        shown = {a.dest: a.default for a in build_parser(loss)._actions}  # what --help prints
        for name in ("learning_rate", "num_generations", "per_device_train_batch_size"):
            assert shown[name] == getattr(ref, name), (loss, name)
    _, opo = parse_train_args(
        ["--model", "m", "--dataset", "d", "--loss", "opo", "--bf16", "false"]
    )
    assert opo.num_generations == _defaults(_classes()["OPOConfig"])["num_generations"] == 6


def _number(text: str):
    return float(text) if re.search(r"[.e]", text) else int(text)


_PAIR = re.compile(r'`(\w+)="([^"]*)"`|`(\w+)`(?: \([^)]*\))? (-?[\d.]+(?:e-?\d+)?)\b')


def _pairs(cell: str) -> list[tuple[str, object]]:
    """``name="x"`` and ``name` 0.5`` statements of a table cell."""
    out = []
    for m in _PAIR.finditer(cell):
        out.append((m[1], m[2]) if m[1] else (m[3], _number(m[4])))
    return out


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table whose header line starts with ``header``."""
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _check(statements, where):
    classes = _classes()
    checked = 0
    for cls_name, name, value in statements:
        default = _defaults(classes[cls_name])[name]
        assert default == value, (
            f"{where}: {cls_name}.{name} is {default!r}, the docs say {value!r}"
        )
        checked += 1
    return checked


def test_grpo_to_adpo_defaults_table_states_the_configs_defaults():
    text = (ROOT / "docs/guides/grpo-to-adpo.md").read_text()
    rows = _table(text, "| field | `GRPOConfig` (TRL 1.16) | `ADPOConfig` | `OPOConfig` |")
    columns = ("GRPOConfig", "ADPOConfig", "OPOConfig")
    statements = []
    for label, *cells in rows:
        field = re.fullmatch(r"`(\w+)`.*", label)
        for cls_name, cell in zip(columns, cells, strict=True):
            if field:  # a row per field: each cell starts with the value
                statements.append((cls_name, field[1], _number(cell.split()[0])))
            else:
                statements += [(cls_name, n, v) for n, v in _pairs(cell)]
    assert _check(statements, "grpo-to-adpo.md") >= 15


def test_targets_page_defaults_table_states_the_configs_defaults():
    text = (ROOT / "docs/guides/targets-anchors-temperatures.md").read_text()
    rows = _table(text, "| | ADPO (`ADPOConfig`) | OPO (`OPOConfig`) |")
    by_label = {"group size G": "num_generations", "learning rate": "learning_rate"}
    statements = []
    for label, adpo, opo, _bandits in rows:
        for cls_name, cell in (
            (
                "ADPOConfig",
                adpo,
            ),
            ("OPOConfig", opo),
        ):
            pairs = _pairs(cell)
            if not pairs and label in by_label:  # a bare number under a row label
                pairs = [(by_label[label], _number(cell.split()[-1]))]
            statements += [(cls_name, n, v) for n, v in pairs]
    assert _check(statements, "targets-anchors-temperatures.md") >= 12


def test_readme_defaults_line_states_the_configs_defaults():
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"The defaults are the papers?'[^(]*\(([^;]*); OPO: ([^)]*)\)", text)
    assert m, "README: the line with the defaults moved"
    symbols = {"τ": "tau", "τ_base": "tau", "G": "num_generations", "lr": "learning_rate",
               "α": "alpha", "μ": "mu"}  # fmt: skip
    statements = []
    for cls_name, part in (("ADPOConfig", m[1]), ("OPOConfig", m[2])):
        for symbol, value in re.findall(r"(τ_base|τ|G|lr|α|μ) (\d[\d.e-]*)", part):
            statements.append((cls_name, symbols[symbol], _number(value)))
    assert _check(statements, "README.md") == 7


@pytest.mark.parametrize(
    ("cell", "pairs"),
    [
        ('`alpha` 0.4, `weight_norm="group"`', [("alpha", 0.4), ("weight_norm", "group")]),
        ('`target_beta` (β_r) 0.5 for `"softmax"`', [("target_beta", 0.5)]),
        ("`beta` (KL to a reference), 0", []),
        ("`learning_rate` 1.5e-5", [("learning_rate", 1.5e-5)]),
    ],
)
def test_table_cells_are_read_as_written(cell, pairs):
    assert _pairs(cell) == pairs
