"""`adpo train-offline` on a saved tiny model and a JSONL file; bad rows; the default run."""

import json
import math
import re

import pytest

from adpo import cli
from adpo.data.listwise import BadRowError, make_arithmetic_listwise
from adpo.testing import char_tokenizer, tiny_qwen3

KEYS = {
    "rows",
    "steps",
    "top1_accuracy_before",
    "top1_accuracy_after",
    "ndcg_before",
    "ndcg_after",
    "kl_to_reference",
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = make_arithmetic_listwise(30, seed=0)
    rows[3] = {"prompt": "1+1=", "chosen": "2", "rejected": "3"}  # pairwise rows mix in
    rows[7] = {"prompt": "2+2=", "ranking": ["4", "5", "44"]}
    bad = [
        *rows[:5],
        {"prompt": "3+3=", "completions": ["6", "7"], "scores": [1.0, math.nan]},
        *rows[5:],
    ]
    for name, data in (("rows.jsonl", rows), ("bad.jsonl", bad)):
        with (root / name).open("w") as f:
            for r in data:
                f.write(json.dumps(r) + "\n")
    (root / "cfg.yaml").write_text(
        "tau: 2.0\nper_device_train_batch_size: 4\nper_device_eval_batch_size: 8\n"
        "learning_rate: 0.001\nmax_steps: 3\nlogging_steps: 1\nuse_cpu: true\ndisable_tqdm: true\n"
    )
    return root


def _run(saved, out, *extra):
    argv = ["train-offline", "--model", str(saved / "model"), "--config", str(saved / "cfg.yaml")]
    assert cli.main([*argv, "--out", str(out), *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_cli_trains_and_writes_the_summary(saved, tmp_path):
    s = _run(
        saved, tmp_path / "a", "--data", str(saved / "rows.jsonl"), "--target", "plackett_luce"
    )
    assert KEYS <= set(s)
    assert s["rows"] == 30 and s["eval_rows"] == 3 and s["train_rows"] == 27 and s["steps"] == 3
    assert s["tau"] == 2.0 and s["target"] == "plackett_luce" and s["skipped_rows"] == 0
    assert s["kl_to_reference"] > 0
    assert 0 <= s["top1_accuracy_after"] <= 1 and 0 <= s["ndcg_after"] <= 1
    for f in ("log_history.csv", "training.png", "model/config.json"):
        assert (tmp_path / "a" / f).exists(), f


def test_cli_precomputed_anchor_and_skip_bad_rows(saved, tmp_path):
    s = _run(
        saved,
        tmp_path / "b",
        "--data",
        str(saved / "bad.jsonl"),
        "--anchor",
        "precomputed",
        "--skip-bad-rows",
        "--max-steps",
        "2",
    )
    assert s["anchor"] == "precomputed" and s["steps"] == 2
    assert s["skipped_rows"] == 1 and s["skipped_by_kind"] == {"non_finite": 1} and s["rows"] == 30
    # policy = initial reference before training: every anchored score ties, top-1 is chance level
    assert 0 < s["top1_accuracy_before"] < 0.6


def test_cli_bad_row_without_skipping_names_the_row(saved, tmp_path, capsys):
    argv = ["train-offline", "--model", str(saved / "model"), "--config", str(saved / "cfg.yaml"),
            "--out", str(tmp_path / "c"), "--data", str(saved / "bad.jsonl")]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"^adpo train-offline: BadRowError: .*row 5: 'scores'\[1\] is not finite", err)
    assert "Traceback" not in err and "--debug" in err
    with pytest.raises(BadRowError, match=r"row 5"):  # --debug: the exception itself
        cli.main([*argv, "--debug"])


def test_cli_needs_model_and_data_together(saved, tmp_path, capsys):
    # the config's ValueError, through tyro: a usage error on one line
    argv = ["train-offline", "--model", str(saved / "model"), "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "both --model and --data" in err, err


@pytest.mark.slow
def test_default_run_raises_heldout_top1(tmp_path):
    """The embedded default, as the README runs it (a few minutes on two CPU cores)."""
    assert cli.main(["train-offline", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["top1_accuracy_after"] > s["top1_accuracy_before"] + 0.1
    assert s["ndcg_after"] > s["ndcg_before"]


def test_listwise_bench_rejects_unknown_variants(tmp_path):
    from adpo.experiments.offline_listwise import OfflineListwiseConfig, run

    with pytest.raises(ValueError, match="unknown variants"):
        run(OfflineListwiseConfig(out=str(tmp_path), variants=["softmax / nowhere"]))
