"""``adpo train`` glue: dataset loading and validation, YAML config, a real run on a local tiny model."""

from __future__ import annotations

import json
import math

import pytest

from adpo.cli.train import TrainArgs, parse_train_args, prepare_dataset
from adpo.data.rows import load_rows, validate_rows


def _ds(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [{"prompt": "1+1=", "answer": "2"}, {"prompt": "  ", "answer": "3"}],
            r"row 1: column 'prompt' is empty",
        ),
        (
            [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": None}],
            r"row 1: column 'answer' is missing",
        ),
        ([{"prompt": "1+1="}], r"missing column\(s\) \['answer'\]"),
        ([{"prompt": [], "answer": "2"}], r"row 0: column 'prompt' is an empty list"),
        (
            [{"prompt": [{"text": "hi"}], "answer": "2"}],
            r"row 0: column 'prompt' must be a string or a list",
        ),
        ([{"prompt": [{"role": "user", "content": " "}], "answer": "2"}], "only empty messages"),
    ],
)
def test_bad_rows_are_named(rows, match):
    with pytest.raises(ValueError, match=match):
        validate_rows(_ds(rows), ["prompt", "answer"], name="data")


def test_good_rows_pass_including_chat_prompts():
    validate_rows(
        _ds(
            [
                {"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"},
                {"prompt": [{"role": "user", "content": "x"}], "answer": "3"},
            ]
        ),
        ["prompt", "answer"],
    )


def test_load_rows_reads_jsonl_and_parquet_and_names_missing_files(tmp_path):
    rows = [{"problem": "What is $1+1$?", "solution": r"$\boxed{2}$"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_rows(str(tmp_path / "d.jsonl"))[0] == rows[0]
    _ds(rows).to_parquet(str(tmp_path / "d.parquet"))
    assert load_rows(str(tmp_path / "d.parquet"))[0] == rows[0]
    _ds(rows).save_to_disk(str(tmp_path / "folder"))
    assert load_rows(str(tmp_path / "folder"))[0] == rows[0]
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rows(str(tmp_path / "missing.jsonl"))


def test_prepare_dataset_math_style_columns(tmp_path):
    from adpo.testing import char_tokenizer

    tok = char_tokenizer()
    ds = _ds(
        [
            {"problem": "What is 1+1?", "solution": r"It is $\boxed{2}$.", "level": "1"},
            {"problem": "Name it.", "solution": "no boxed answer", "level": "2"},
        ]
    )
    args = TrainArgs(model="m", dataset="d", chat="no")
    with pytest.warns(UserWarning, match="1 of 2 rows have no parsable answer.*row 1"):
        out, kind = prepare_dataset(ds, args, tok)
    assert kind == "math"
    assert out.column_names == ["solution", "prompt"] or set(out.column_names) == {
        "prompt",
        "solution",
    }
    assert out[0]["prompt"].startswith("What is 1+1?") and r"\boxed{}" in out[0]["prompt"]
    chat, _ = prepare_dataset(ds.select([0]), TrainArgs(model="m", dataset="d", chat="yes"), tok)
    assert chat[0]["prompt"][0]["role"] == "user"
    with pytest.raises(ValueError, match=r"row 0: column 'problem' is empty"):
        prepare_dataset(_ds([{"problem": "", "solution": r"\boxed{1}"}]), args, tok)


def test_yaml_config_sets_defaults_and_cli_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\ndataset: d\nloss: opo\nmax_steps: 7\ntrainer:\n  alpha: 0.3\n")
    args = parse_train_args(["--config", str(cfg), "--max-steps", "3"])
    assert (args.model, args.loss, args.max_steps, args.trainer) == ("m", "opo", 3, {"alpha": 0.3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ndataset: d\nalpha: 0.3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['alpha'\].*trainer:"):
        parse_train_args(["--config", str(bad)])
    with pytest.raises(ValueError, match="--loss"):
        parse_train_args(["--model", "m", "--dataset", "d", "--loss", "ppo"])


@pytest.fixture
def local_model_and_data(tmp_path):
    from adpo.data.arithmetic import ArithmeticTask
    from adpo.testing import char_tokenizer, tiny_qwen3

    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = ArithmeticTask(digits=1).sample(32, seed=0)
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path


def _argv(root, *extra):
    return [
        "--model", str(root / "model"),
        "--dataset", str(root / "data.jsonl"),
        "--output-dir", str(root / "out"),
        "--reward", "arithmetic",
        "--chat", "no",
        "--num-generations", "4",
        "--per-device-train-batch-size", "8",
        "--max-completion-length", "3",
        "--learning-rate", "1e-2",
        *extra,
    ]  # fmt: skip


def test_adpo_train_runs_saves_and_resumes_on_a_local_model(local_model_and_data):
    from adpo.cli.train import main

    root = local_model_and_data
    assert main(_argv(root, "--max-steps", "2", "--save-steps", "1", "--loss", "adpo-pl")) == 0
    assert (root / "out" / "checkpoint-2").is_dir() and (
        root / "out" / "model.safetensors"
    ).exists()
    state = json.loads((root / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in state["log_history"] if "loss" in h)
    # resume from the last checkpoint and go two steps further
    assert (
        main(
            _argv(
                root, "--max-steps", "4", "--save-steps", "2", "--resume-from-checkpoint", "latest"
            )
        )
        == 0
    )
    state = json.loads((root / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]


def test_adpo_train_names_a_bad_row(local_model_and_data):
    from adpo.cli.train import main

    root = local_model_and_data
    lines = (root / "data.jsonl").read_text().splitlines()
    lines[5] = json.dumps({"prompt": "", "answer": "3"})
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"row 5: column 'prompt' is empty"):
        main(_argv(root, "--max-steps", "1"))
