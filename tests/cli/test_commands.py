"""Every ``adpo`` command to one standard: ``--help`` without reST markup, one-line errors with
the exit statuses of the CLI (2 usage, 1 data or files), ``adpo env`` for bug reports."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from adpo import cli

REST = re.compile(r"``|:(?:class|func|mod|meth|attr|data):`")
COMMANDS = [[name] for name in cli.COMMANDS] + [["bench", name] for name in cli.BENCHMARKS]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_no_rest_markup(command, capsys):
    if command == ["bench", "distill-teacher"] or command == ["bench", "distill"]:
        pytest.importorskip("stable_baselines3")
    assert cli.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and not REST.search(out), REST.search(out)


def _options(help_text: str) -> dict[str, str]:
    """``--name`` → its help entry (the lines up to the next option)."""
    entries = re.split(r"\n  (?=-)", help_text)
    return {e.split()[0].rstrip(","): " ".join(e.split()) for e in entries[1:]}


def test_train_help_lists_the_objective_options_once_each_with_one_default(capsys):
    assert cli.main(["train", "--help"]) == 0
    options = _options(capsys.readouterr().out)
    assert {"--model", "--dataset", "--loss", "--config", "--tau", "--target", "--anchor",
            "--num_generations", "--temperature", "--learning_rate", "--max_steps"} <= set(options)  # fmt: skip
    assert "--alpha" not in options and "--beta" not in options  # OPO's; refused for ADPO
    for entry in options.values():
        assert entry.count("(default") <= 1, entry
    assert options["--tau"].endswith("(default: 0.8)")
    assert "(required)" in options["--model"]
    assert cli.main(["train", "--loss", "opo", "--help"]) == 0
    options = _options(capsys.readouterr().out)
    assert "--alpha" in options and "--tau" not in options
    assert options["--num_generations"].endswith("(default: 6)")
    assert cli.main(["train", "--loss", "grpo", "--help"]) == 0
    assert "--beta" in _options(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "saturation", "--foo", "1"],
         r"^adpo bench saturation: unrecognized option\(s\): --foo 1 \(see adpo bench saturation --help\)$"),
        (["bench", "saturation", "--points", "abc"],
         r"^adpo bench saturation: --points: invalid literal for int\(\) with base 10: 'abc'$"),
        (["train-offline", "--target", "moon"],
         r"^adpo train-offline: --target: 'moon' is not one of .*softmax"),
    ],
)  # fmt: skip
def test_tyro_commands_answer_a_usage_error_in_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err), err
    assert len(err.splitlines()) == 1 and "╭" not in err


def test_errors_while_running_a_command_are_one_line_and_debug_shows_the_traceback(
    tmp_path, capsys
):
    argv = ["train-offline", "--model", "x", "--data", str(tmp_path / "none.jsonl"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"^adpo train-offline: FileNotFoundError: .*none\.jsonl", err)
    assert "Traceback" not in err and "run again with --debug" in err
    with pytest.raises(FileNotFoundError):
        cli.main([*argv, "--debug"])


def test_env_reports_what_benchmark_summaries_record(capsys):
    from adpo._io import code_version, library_versions
    from adpo.cli.env import LIBRARIES

    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    lines = dict(line[2:].split(": ", 1) for line in out.splitlines() if line.startswith("- "))
    code = code_version()
    assert lines["adpo"] == code["adpo"]
    assert lines["adpo commit"].split()[0] == (code["commit"] or "none")
    assert ("dirty" in lines["adpo commit"]) == bool(code["dirty"])
    for name, version in library_versions(LIBRARIES).items():
        assert lines[name] == version, name
    assert {"Python", "platform", "device", "torch", "trl", "vllm", "verl"} <= set(lines)
    assert cli.main(["env", "--json"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("verl") is not None, reason="verl is installed")
def test_verl_help_and_usage_errors_without_verl(capsys):
    assert cli.main(["verl", "--help"]) == 0
    assert "--config" in capsys.readouterr().out
    assert cli.main(["verl"]) == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err


# --------------------------------------------------------------------------- the docs' commands

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def _train_section() -> str:
    text = (ROOT / "docs/guides/grpo-to-adpo.md").read_text()
    start = text.index("## From the command line: `adpo train`")
    end = text.find("\n## ", start + 10)
    return text[start : end if end > 0 else None]


def test_documented_adpo_train_commands_parse(tmp_path, monkeypatch):
    from adpo.cli.train import parse_train_args

    blocks = FENCE.findall(_train_section())
    (tmp_path / "run.yaml").write_text(next(code for lang, code in blocks if lang == "yaml"))
    monkeypatch.chdir(tmp_path)
    commands = [
        line
        for lang, code in blocks
        if lang == "bash"
        for line in code.replace("\\\n", " ").splitlines()
        if line.startswith("adpo train")
    ]
    assert len(commands) >= 5
    for line in commands:
        args, config = parse_train_args(shlex.split(line)[2:])
        assert args.model and config.output_dir, line


def test_documented_error_messages_are_what_adpo_prints(tmp_path, monkeypatch, capsys):
    pages = [_train_section(), (ROOT / "docs/guides/getting-started.md").read_text()]
    examples = [
        (m[1], m[2].strip())
        for page in pages
        for lang, code in FENCE.findall(page)
        if lang == "text"
        for m in re.finditer(r"^\$ (adpo .+)\n((?:[^$].*\n?)+)", code, re.M)
    ]
    assert len(examples) >= 3
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    for command, output in examples:
        status = cli.main(shlex.split(command)[1:])
        assert status == 2 or status == 1, command
        assert capsys.readouterr().err.strip() == output, command
