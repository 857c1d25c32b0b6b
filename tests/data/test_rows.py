"""The one rows loader and the one YAML reader of ``adpo train`` and ``adpo train-offline``."""

from __future__ import annotations

import json
import re

import pytest

from adpo.data.rows import load_rows, read_yaml_config, validate_rows


def test_jsonl_keeps_heterogeneous_rows_and_names_a_bad_line(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"prompt": "a", "scores": [1, 2]}\n\n{"prompt": "b", "scores": "oops"}\n')
    assert load_rows(f) == [{"prompt": "a", "scores": [1, 2]}, {"prompt": "b", "scores": "oops"}]
    f.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(
        ValueError, match=r"line 2 is not valid JSON: Expecting value at column 12$"
    ):
        load_rows(f)
    f.write_text('{"prompt": "a"}\n["b"]\n')
    with pytest.raises(ValueError, match=r"line 2 is a JSON list, not an object"):
        load_rows(f)


def test_json_list_and_dataset_dict_split(tmp_path):
    from datasets import Dataset, DatasetDict

    (tmp_path / "r.json").write_text(json.dumps([{"x": 1}]))
    assert load_rows(tmp_path / "r.json") == [{"x": 1}]
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="JSON list of rows"):
        load_rows(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[{"x": 1},\n {"x": 2,}]')
    with pytest.raises(ValueError, match=r"not valid JSON: .* at line 2, column 10$"):
        load_rows(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[{"x": 1}, 2]')
    with pytest.raises(ValueError, match=r"row 1 is a JSON int, not an object"):
        load_rows(tmp_path / "bad.json")
    DatasetDict(
        {"train": Dataset.from_list([{"x": 1}]), "test": Dataset.from_list([{"x": 2}])}
    ).save_to_disk(str(tmp_path / "dd"))
    assert load_rows(tmp_path / "dd", split="test") == [{"x": 2}]
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\], not 'dev'"):
        load_rows(tmp_path / "dd", split="dev")
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "nothing")


def test_validate_rows_names_the_row_missing_a_column():
    with pytest.raises(ValueError, match=r"row 1: column 'answer' is missing"):
        validate_rows([{"prompt": "a", "answer": "1"}, {"prompt": "b"}], ["prompt", "answer"])
    with pytest.raises(ValueError, match=r"row 0: column 'answer' must be text, got bool"):
        validate_rows([{"prompt": "a", "answer": True}], ["prompt", "answer"])
    with pytest.raises(ValueError, match="no rows"):
        validate_rows([], ["prompt"])


def test_yaml_reader_rejects_unknown_keys_and_non_mappings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tau: 0.5\ntua: 1\nbeta: 2\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['tua'\].*; see the fields"):
        read_yaml_config(f, allowed={"tau", "beta"}, where="cmd", hint="see the fields")
    f.write_text("tau: 0.5\n")
    assert read_yaml_config(f, allowed={"tau"}, where="cmd") == {"tau": 0.5}
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping, got list"):
        read_yaml_config(f, allowed={"tau"}, where="cmd")
    with pytest.raises(FileNotFoundError, match="cmd: no such config file"):
        read_yaml_config(tmp_path / "none.yaml", allowed=(), where="cmd")


def test_train_offline_config_file_with_a_typo_is_refused_before_training(tmp_path, capsys):
    from adpo import cli

    (tmp_path / "c.yaml").write_text("taau: 0.5\n")
    assert cli.main(["train-offline", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"),
                     "--warm-start-steps", "0", "--max-steps", "1"]) == 1  # fmt: skip
    assert re.search(r"train-offline: unknown key\(s\) \['taau'\]", capsys.readouterr().err)
