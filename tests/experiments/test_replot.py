"""``--replot`` of the benchmarks whose plots come from their summary: it redraws the plots
from the committed summary, rewrites nothing else, and refuses a folder without one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adpo.cli import main

RESULTS = Path(__file__).resolve().parents[2] / "results"

CASES = [  # (benchmark, committed folder, its summary, the plots a replot draws)
    ("bandits", "bandits", "summary.json", ("winmass_heatmap.png", "scaling.png", "anchors.png")),
    ("efficiency", "efficiency", "efficiency.json", ("efficiency.png",)),
    ("listwise", "offline_listwise", "summary.json", ("offline_listwise.png",)),
]


@pytest.mark.parametrize(("bench", "folder", "summary", "plots"), CASES)
def test_replot_redraws_the_plots_and_leaves_the_summary(tmp_path, bench, folder, summary, plots):
    shutil.copy(RESULTS / folder / summary, tmp_path / summary)
    before = (tmp_path / summary).read_bytes()
    assert main(["bench", bench, "--out", str(tmp_path), "--replot"]) == 0
    for png in plots:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (tmp_path / summary).read_bytes() == before  # provenance and numbers untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([summary, *plots])


@pytest.mark.parametrize(("bench", "folder", "summary", "plots"), CASES)
def test_replot_without_a_summary_says_which_file_is_missing(
    tmp_path, bench, folder, summary, plots
):
    from importlib import import_module

    from adpo.cli import BENCHMARKS

    module = import_module(BENCHMARKS[bench][0])
    config = next(getattr(module, n) for n in module.__all__ if n.endswith("Config"))
    with pytest.raises(ValueError, match=f"--replot: no {tmp_path / summary}"):
        module.replot(config(out=str(tmp_path), replot=True))
