"""``adpo train``: TRL's parser over the configs, a one-line error per bad input, real runs.

Every bad input is checked through ``adpo.cli.main`` as a user meets it: the exit status
(2 usage, 1 data or files), a message that names the culprit (flag, file and line, row),
no traceback, and no output folder. The runs use a tiny model saved to disk.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from adpo import cli
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


def test_prepare_dataset_math_style_columns():
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
    assert kind == "math" and set(out.column_names) == {"prompt", "solution"}
    assert out[0]["prompt"].startswith("What is 1+1?") and r"\boxed{}" in out[0]["prompt"]
    chat, _ = prepare_dataset(ds.select([0]), TrainArgs(model="m", dataset="d", chat="yes"), tok)
    assert chat[0]["prompt"][0]["role"] == "user"
    with pytest.raises(ValueError, match=r"row 0: column 'problem' is empty"):
        prepare_dataset(_ds([{"problem": "", "solution": r"\boxed{1}"}]), args, tok)


def test_columns_are_options():
    """--prompt_column and --reference_column choose the columns; the reward reads its own name."""
    ds = _ds([{"q": "1+1=", "gold": "2", "other": "x"}])
    args = TrainArgs(model="m", dataset="d", chat="no", prompt_column="q", reference_column="gold")
    out, kind = prepare_dataset(ds, args, None)
    assert kind == "exact" and out[0] == {"prompt": "1+1=", "answer": "2"}
    with pytest.raises(ValueError, match=r"missing column\(s\) \['answer'\]"):
        prepare_dataset(ds, TrainArgs(model="m", dataset="d", prompt_column="q"), None)


# --------------------------------------------------------------------------- parsing


def _config(*argv):
    return parse_train_args(["--model", "m", "--dataset", "d", *argv])


def test_objective_options_are_flags_of_their_config():
    from trl import GRPOConfig

    from adpo.trainers import ADPOConfig, OPOConfig

    args, cfg = _config("--tau", "0.5", "--anchor", "ema", "--beta", "0")
    assert type(cfg) is ADPOConfig and (cfg.tau, cfg.anchor, cfg.target) == (
        0.5,
        "ema",
        "plackett_luce",
    )
    assert args.loss == "adpo-pl"
    _, cfg = _config("--loss", "adpo", "--target", "softmax")
    assert (type(cfg), cfg.target) == (ADPOConfig, "softmax")
    _, cfg = _config("--loss", "adpo", "--target", "top1")
    assert (type(cfg), cfg.target) == (ADPOConfig, "top1")
    _, cfg = _config("--loss", "opo", "--alpha", "0.3", "--mu", "2", "--num-generations", "3",
                     "--per_device_train_batch_size", "6")  # fmt: skip
    assert type(cfg) is OPOConfig and (cfg.alpha, cfg.mu, cfg.num_generations) == (0.3, 2.0, 3)
    _, cfg = _config("--loss", "grpo", "--beta", "0.04", "--num_generations", "4")
    assert type(cfg) is GRPOConfig and (cfg.beta, cfg.num_generations) == (0.04, 4)
    # the GRPO preset's own settings, and TRL's for what it does not set
    assert cfg.loss_type == "grpo" and cfg.epsilon == 0.2


def test_config_file_keys_are_the_flags_and_flags_always_win(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "model: m\ndataset: d\nloss: opo\nmax_steps: 7\nalpha: 0.3\nlearning_rate: 1e-5\n"
    )
    args, c = parse_train_args(["--config", str(cfg)])
    assert (args.model, args.loss, c.max_steps, c.alpha, c.learning_rate) == (
        "m",
        "opo",
        7,
        0.3,
        1e-5,
    )
    # a flag equal to its default still beats the file
    args, c = parse_train_args(["--config", str(cfg), "--max_steps", "-1", "--alpha", "0.4"])
    assert (args.loss, c.max_steps, c.alpha) == ("opo", -1, 0.4)
    # --loss beats the file too; the file's OPO key is then named as another objective's
    cfg.write_text("model: m\ndataset: d\nloss: opo\nmax_steps: 7\n")
    args, c = parse_train_args(["--config", str(cfg), "--loss", "adpo-pl", "--max-steps", "100"])
    assert (args.loss, type(c).__name__, c.max_steps) == ("adpo-pl", "ADPOConfig", 100)


def test_script_options_take_effect(monkeypatch):
    from adpo.cli import train

    _, cfg = _config("--format_weight", "0.5")
    assert cfg.reward_weights == [1.0, 0.5]  # the format reward's weight beside the task's
    assert _config()[1].reward_weights is None
    assert _config()[1].bf16 is False  # CPU here: bf16 only where the GPU supports it
    seen = {}
    monkeypatch.setattr(train, "load_rows", lambda source, **kw: seen.update(kw) or [])
    args, _ = _config("--dataset_config", "main", "--dataset_train_split", "test")
    train._read_rows(args)
    assert seen == {"split": "test", "name": "main"}
    suffixed, _ = prepare_dataset(
        _ds([{"prompt": "1+1=", "answer": "2"}]),
        TrainArgs(model="m", dataset="d", chat="no", prompt_suffix=" Answer:"),
        None,
    )
    assert suffixed[0]["prompt"] == "1+1= Answer:"


def test_config_file_sets_environment_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("ADPO_TEST_VAR", raising=False)
    (tmp_path / "c.yaml").write_text("env:\n  ADPO_TEST_VAR: 3\n")
    _config("--config", str(tmp_path / "c.yaml"))
    import os

    assert os.environ["ADPO_TEST_VAR"] == "3"


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A tiny model saved like a fine-tune of a hub model, and 32 arithmetic prompts."""
    from adpo.data.arithmetic import ArithmeticTask
    from adpo.testing import char_tokenizer, tiny_qwen3

    root = tmp_path_factory.mktemp("train")
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    # the card TRL writes next to a fine-tune: adpo's card names this base model
    (root / "model" / "README.md").write_text("---\nbase_model: Qwen/Qwen3-0.6B\n---\n# tiny\n")
    rows = ArithmeticTask(digits=1).sample(32, seed=0)
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "empty.jsonl").write_text("")
    (root / "broken.jsonl").write_text(
        '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2" "answer": 4}\n'
    )
    lines = [json.dumps(r) for r in rows]
    lines[5] = json.dumps({"prompt": "", "answer": "3"})
    (root / "badrow.jsonl").write_text("\n".join(lines) + "\n")
    (root / "folder").mkdir()
    (root / "used").mkdir()
    (root / "used" / "checkpoint-3").mkdir()
    return root


def _argv(root, out, *extra):
    return [
        "--model", str(root / "model"),
        "--dataset", str(root / "data.jsonl"),
        "--output_dir", str(out),
        "--reward", "arithmetic",
        "--chat", "no",
        "--num_generations", "4",
        "--per_device_train_batch_size", "8",
        "--max_completion_length", "3",
        "--learning_rate", "1e-2",
        "--activation_checkpointing", "false",
        "--report_to", "none",
        "--disable_tqdm", "true",
        "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def _yaml(root, name, text):
    path = root / name
    path.write_text(text)
    return str(path)


BAD = [
    # (id, extra argv (ROOT/… paths are filled in), exit status, message)
    ("other objective's flag", ["--alpha", "0.3"],
     2, r"--alpha is an option of --loss opo \(OPOConfig\), not of --loss adpo-pl"),
    ("ADPO flag under OPO", ["--loss", "opo", "--tau", "0.5"],
     2, r"--tau is an option of --loss adpo-pl/adpo \(ADPOConfig\)"),
    ("unknown flag", ["--foo", "1"], 2, r"unknown option --foo"),
    ("misspelt flag", ["--learning_rat", "1e-3"], 2, r"unknown option --learning_rat; did you mean --learning_rate\?"),
    ("bad int", ["--max_steps", "abc"], 2, r"--max_steps.*invalid int value: 'abc'"),
    ("bad choice", ["--anchor", "moon"], 2, r"--anchor.*invalid choice: 'moon'"),
    ("unknown loss", ["--loss", "ppo"], 2, r"--loss must be one of adpo-pl, .*; got 'ppo'"),
    ("negative lr", ["--learning_rate", "-1"], 2, r"--learning_rate must be a number > 0; got -1.0"),
    ("zero temperature", ["--temperature", "0"], 2, r"--temperature must be a number > 0"),
    ("zero steps", ["--max_steps", "0"], 2, r"--max_steps must be at least 1, or -1"),
    ("negative steps", ["--max_steps", "-3"], 2, r"--max_steps must be at least 1, or -1 .*got -3"),
    ("no epochs", ["--max_steps", "-1", "--num_train_epochs", "0"], 2, r"--num_train_epochs must be > 0"),
    ("G = 1", ["--num_generations", "1"], 2, r"--num_generations must be at least 2"),
    ("batch not whole groups", ["--num_generations", "3"],
     2, r"generation_batch_size \(8\) must be divisible by num_generations \(3\)"),
    ("target of another objective", ["--target", "softmax"],
     2, r"--target softmax contradicts --loss adpo-pl \(target plackett_luce\); that is --loss adpo"),
    ("top1 is not the ranking objective", ["--loss", "adpo-pl", "--target", "top1"],
     2, r"--target top1 contradicts --loss adpo-pl \(target plackett_luce\); that is --loss adpo"),
    ("ranking target of the distribution objective", ["--loss", "adpo", "--target", "plackett_luce"],
     2, r"--target plackett_luce contradicts --loss adpo \(target softmax or top1\); that is --loss adpo-pl"),
    ("config check", ["--tau", "-1"], 2, r"ADPOConfig: `tau` must be finite and > 0, got -1.0"),
    ("refused GRPO field", ["--beta", "0.1"], 2, r"`beta=0.1`: the KL penalty"),
    ("format and reward weights", ["--format_weight", "0.5", "--reward_weights", "1", "1"],
     2, r"--format_weight or --reward_weights, not both"),
    ("config file: other objective", ["--config", "YAML:max_steps: 3\nalpha: 0.3\n"],
     2, r"c\.yaml line 2: --alpha is an option of --loss opo"),
    ("config file: twice", ["--config", "YAML:max_steps: 3\nmax_steps: 4\n"],
     2, r"c\.yaml line 2: `max_steps` is given twice \(also on line 1\)"),
    ("config file: bad type", ["--config", "YAML:save_steps: 5\nmax_steps: three\n"],
     2, r"c\.yaml line 2: `max_steps` expects INT, got 'three'"),
    ("config file: config check", ["--config", "YAML:tau: -2\n"],
     2, r"`tau` must be finite and > 0, got -2.0 \(.*c\.yaml line 1\)"),
    ("config file: range", ["--config", "YAML:temperature: -2\n"],
     2, r"`temperature` \(.*c\.yaml line 1\) must be a number > 0"),
    ("config file: old trainer block", ["--config", "YAML:trainer:\n  tau: 0.5\n"],
     2, r"c\.yaml line 1: `trainer:` is gone; write its keys at the top level \(tau: …\)"),
    ("config file: unknown loss", ["--config", "YAML:loss: ppo\n"],
     2, r"c\.yaml line 1: `loss` must be one of adpo-pl, .*; got 'ppo'"),
    ("config file: not YAML", ["--config", "YAML:max_steps: 3\ntau: [1\n"],
     1, r"c\.yaml line 2, column 6: not valid YAML"),
    ("config file: missing", ["--config", "ROOT/none.yaml"], 1, r"--config .*none\.yaml: no such file"),
    ("model: no such folder", ["--model", "./my-model"],
     1, r"--model \./my-model: no such folder \(and not a hub id"),
    ("model: not a model folder", ["--model", "ROOT/folder"], 1, r"folder: the folder has no config\.json"),
    ("model: neither folder nor on the hub", ["--model", "no-such-model-xyz"],
     1, r"--model no-such-model-xyz: cannot load the tokenizer \(no such folder; tried the hub\)"),
    ("dataset: missing", ["--dataset", "ROOT/missing.jsonl"], 1, r"--dataset .*missing\.jsonl: no such file"),
    ("dataset: empty", ["--dataset", "ROOT/empty.jsonl"], 1, r"empty\.jsonl: the dataset has no rows"),
    ("dataset: malformed", ["--dataset", "ROOT/broken.jsonl"],
     1, r"broken\.jsonl: line 2 is not valid JSON: Expecting ',' delimiter at column 16$"),
    ("dataset: bad row", ["--dataset", "ROOT/badrow.jsonl"], 1, r"row 5: column 'prompt' is empty"),
    ("output folder in use", ["--output_dir", "ROOT/used"],
     2, r"--output_dir .*used already holds files .*--resume_from_checkpoint latest.*--overwrite_output_dir"),
    ("resume: nothing to resume", ["--resume_from_checkpoint", "latest"],
     1, r"--resume_from_checkpoint latest: no checkpoint-\* folder in"),
    ("resume: no such checkpoint", ["--resume_from_checkpoint", "ROOT/nowhere"],
     1, r"--resume_from_checkpoint .*nowhere: no such folder"),
    ("resume: not a checkpoint", ["--resume_from_checkpoint", "ROOT/folder"],
     1, r"folder: not a checkpoint \(no trainer_state\.json\)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_one_line_naming_the_culprit(local, tmp_path, capsys, extra, status, message):
    extra = [
        _yaml(tmp_path, "c.yaml", a[5:]) if a.startswith("YAML:") else a.replace("ROOT", str(local))
        for a in extra
    ]
    out = tmp_path / "out"
    assert cli.main(["train", *_argv(local, out, "--max_steps", "1"), *extra]) == status
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3 and lines[0].startswith("adpo train: "), err
    assert re.search(message, err, re.M), err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written


def test_debug_shows_the_traceback(local, tmp_path):
    argv = ["train", *_argv(local, tmp_path / "out"), "--dataset", str(local / "empty.jsonl")]
    with pytest.raises(Exception, match="the dataset has no rows"):
        cli.main([*argv, "--debug"])


# --------------------------------------------------------------------------- real runs


def _card(out):
    return (out / "README.md").read_text()


def test_run_saves_resumes_and_writes_a_true_model_card(local, tmp_path, capsys):
    from adpo._io import code_version
    from adpo.trainers import ADPOConfig

    out = tmp_path / "out"
    flags = ["--loss", "adpo", "--target", "softmax", "--tau", "0.5", "--anchor", "ema",
             "--save_steps", "1"]  # fmt: skip
    assert cli.main(["train", *_argv(local, out, "--max_steps", "2", *flags)]) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in state["log_history"] if "loss" in h)
    # the options reached the trainer: the config it saved with its checkpoint
    saved = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert type(saved) is ADPOConfig
    assert (saved.tau, saved.anchor, saved.target, saved.max_steps) == (0.5, "ema", "softmax", 2)

    card = _card(out)
    version = code_version()
    assert "This model was trained with ADPO, a method introduced in [From Probability to " \
           "Advantage: Unifying Alignment via Anchored Ranking](https://huggingface.co/papers/2510.18913)" in card  # fmt: skip
    assert "@article{wang2025adpo" in card and "author       = {Zixian Wang}" in card
    assert "deepseekmath" not in card.lower() and "huggingface.co/None" not in card
    assert "base_model: Qwen/Qwen3-0.6B" in card  # the base named by the model folder's card
    assert f"fine-tuned version of [Qwen/Qwen3-0.6B](https://huggingface.co/Qwen/Qwen3-0.6B) " \
           f"(from the local folder `{local / 'model'}`)" in card  # fmt: skip
    assert f"- adpo: {version['adpo']}" in card and (version["commit"] or "") in card
    assert f'model="{out}"' in card

    # resume from the last checkpoint and go two steps further
    capsys.readouterr()
    assert cli.main(["train", *_argv(local, out, "--max_steps", "4", *flags,
                                     "--resume_from_checkpoint", "latest")]) == 0  # fmt: skip
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert f"resuming from {out / 'checkpoint-2'}" in capsys.readouterr().err
    assert _card(out).count("- adpo:") == 1


@pytest.mark.parametrize(
    ("loss", "flags", "expect"),
    [
        ("opo", ["--alpha", "0.3", "--mu", "2", "--num_generations", "4"],
         {"alpha": 0.3, "mu": 2.0, "num_generations": 4}),
        ("grpo", ["--beta", "0.04", "--num_generations", "4"], {"beta": 0.04, "num_generations": 4}),
    ],
)  # fmt: skip
def test_other_objectives_options_reach_the_trainer(local, tmp_path, loss, flags, expect):
    out = tmp_path / "out"
    assert cli.main(["train", *_argv(local, out, "--max_steps", "1", "--loss", loss, *flags)]) == 0
    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert {k: getattr(saved, k) for k in expect} == expect
    card = _card(out)
    assert "huggingface.co/None" not in card and "base_model: Qwen/Qwen3-0.6B" in card
    if loss == "opo":
        assert "trained with OPO, a method introduced in *Orthogonalized Policy Optimization* " \
               "(Wang Zixian)" in card and "@misc{wang_opo" in card  # fmt: skip
        assert "deepseekmath" not in card.lower()
    else:  # TRL's own trainer and card for the GRPO family; adpo fills in what it can
        assert "DeepSeekMath" in card and "- adpo:" in card


def test_overwrite_output_dir_trains_into_a_used_folder(local, tmp_path):
    out = tmp_path / "out"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["train", *_argv(local, out, "--max_steps", "1", "--save_strategy", "no")]
    assert cli.main(argv) == 2
    assert cli.main([*argv, "--overwrite_output_dir"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").exists()


def test_tied_lm_head_is_an_alias_and_its_resume_note_is_dropped():
    import logging

    from adpo.cli.train import _tied_aliases, _TiedWeightsNote
    from adpo.testing import tiny_qwen3

    model = tiny_qwen3(40, hidden_size=16, num_layers=1)
    assert _tied_aliases(model) == {"lm_head.weight"}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    note = _TiedWeightsNote(_tied_aliases(model))

    def record(msg):
        return logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, msg, None, None)

    missing = "There were missing keys in the checkpoint model loaded: {}."
    assert not note.filter(record(missing.format(["lm_head.weight"])))
    assert note.filter(record(missing.format(["lm_head.weight", "model.norm.weight"])))
    assert note.filter(record("something else"))
