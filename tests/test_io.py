"""The result files every benchmark writes: CSV rows with differing keys survive a round trip."""

import pytest

from adpo._io import read_csv, write_csv


def test_write_csv_takes_ragged_rows_and_read_csv_gives_them_back(tmp_path):
    rows = [
        {"step": 1, "loss": "grpo", "reward": 0.5},
        {"step": 2, "loss": "grpo", "heldout_accuracy": 0.25},  # a column only some rows have
        {"step": 3, "loss": "opo", "reward": 1e-05, "lr": 3e-4},
    ]
    path = tmp_path / "curves.csv"
    write_csv(path, rows)
    assert path.read_text().splitlines()[0] == "step,loss,reward,heldout_accuracy,lr"
    back = read_csv(path)
    assert back == rows  # numbers back to numbers (ints stay ints), empty cells dropped
    assert isinstance(back[0]["step"], int) and isinstance(back[2]["reward"], float)


def test_write_csv_refuses_no_rows(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "x.csv", [])
