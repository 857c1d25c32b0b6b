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


def test_environment_records_the_code_version_and_the_libraries_asked_for():
    import subprocess
    from pathlib import Path

    from adpo import __version__
    from adpo._io import environment

    env = environment(libraries=("numpy", "no-such-distribution-adpo"))
    assert env["adpo"] == __version__
    assert env["numpy"] == __import__("numpy").__version__
    assert env["no-such-distribution-adpo"] == "not installed"
    import adpo

    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists() and Path(adpo.__file__).resolve().is_relative_to(root):
        # adpo runs from this checkout: the commit is git's own answer
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert env["commit"] == head and len(head) == 40
        assert isinstance(env["dirty"], bool)


@pytest.mark.parametrize("layout", ["site-packages", "target-in-another-git-project"])
def test_code_version_of_an_installed_copy_has_no_commit(tmp_path, layout):
    """An installed wheel reports adpo's version and no commit, even two folders below the
    root of somebody else's git project (``pip install --target vendor``)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import adpo

    if layout == "site-packages":
        site = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    else:
        if shutil.which("git") is None:
            pytest.skip("git is not installed")
        project = tmp_path / "project"
        project.mkdir()
        (project / "pyproject.toml").write_text('[project]\nname = "their-project"\n')
        git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "pyproject.toml"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "theirs"], check=True)
        site = project / "vendor"
    shutil.copytree(
        Path(adpo.__file__).parent, site / "adpo", ignore=shutil.ignore_patterns("__pycache__")
    )
    code = (
        "import json, adpo, adpo._io as io; "
        "print(json.dumps({'file': adpo.__file__, **io.code_version()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout)
    assert Path(got.pop("file")).resolve() == (site / "adpo" / "__init__.py").resolve()
    assert got == {"adpo": adpo.__version__, "commit": None, "dirty": None}


def test_describe_commit_names_the_commit_the_dirt_or_an_installed_copy():
    from adpo._io import describe_commit

    sha = "0123456789abcdef0123456789abcdef01234567"
    assert describe_commit({"adpo": "0.1.0", "commit": sha, "dirty": False}) == sha
    assert describe_commit({"adpo": "0.1.0", "commit": sha, "dirty": True}) == (
        sha + " (dirty: tracked files differ from it)"
    )
    assert describe_commit({"adpo": "0.1.0", "commit": None, "dirty": None}) == (
        "none (an installed package, not a git checkout)"
    )


def test_provenance_records_command_environment_device_and_the_threads_asked_for():
    import torch

    from adpo._io import device_name, provenance

    p = provenance(("numpy",), device="cpu", command="adpo bench x --out y")
    assert p["command"] == "adpo bench x --out y"
    env = p["environment"]
    assert env["device"] == "cpu" and env["numpy"] == __import__("numpy").__version__
    assert env["threads"] == str(torch.get_num_threads()) and "commit" in env
    assert provenance(threads=3)["environment"]["threads"] == "3"  # work done by other processes
    assert device_name(torch.device("cpu")) == "cpu"
    if torch.cuda.is_available():
        assert device_name("cuda").startswith("cuda:0 (")  # and the GPU's model


def test_replot_provenance_keeps_the_runs_and_records_its_own_apart():
    from adpo import __version__
    from adpo._io import replot_provenance

    run = {
        "command": "adpo bench reasoning --out r",
        "environment": {"threads": "1", "trl": "1.16.0"},
        "wall_time_s": 5.0,
        "per_loss": {"stale": "derived fields are rebuilt, not kept"},
        "provenance_recovered": {"results_committed_in": "abc"},
    }
    out = replot_provenance(run, keep=("wall_time_s", "load_average"), command="adpo … --replot")
    assert out["command"] == run["command"] and out["environment"] == run["environment"]
    assert out["wall_time_s"] == 5.0 and "load_average" not in out and "per_loss" not in out
    assert out["provenance_recovered"] == run["provenance_recovered"]
    assert out["replot_command"] == "adpo … --replot" and out["replot_code"]["adpo"] == __version__
    unknown = replot_provenance(None)  # no summary: the run's provenance is not invented
    assert unknown["command"] is None and unknown["environment"] is None


def test_bench_command_and_read_json(tmp_path):
    from adpo._io import bench_command, read_json

    assert bench_command("reasoning", ["--out", "a b"]) == "adpo bench reasoning --out 'a b'"
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "s.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "s.json") == {"a": 1}


def test_code_version_ignores_rewritten_results_but_not_code(tmp_path):
    """A run rewriting committed results is not a dirty tree; an edited source file is."""
    import shutil
    import subprocess

    from adpo import _io

    repo = tmp_path / "repo"
    (repo / "src" / "adpo").mkdir(parents=True)
    (repo / "results").mkdir()
    shutil.copy(_io.__file__, repo / "src" / "adpo" / "_io.py")
    (repo / "pyproject.toml").write_text('[project]\nname = "adpo"\n')
    (repo / "results" / "r.csv").write_text("a\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *cmd], check=True, capture_output=True)
    ns: dict = {"__file__": str(repo / "src" / "adpo" / "_io.py"), "__name__": "adpo_io_copy"}
    exec(compile((repo / "src" / "adpo" / "_io.py").read_text(), ns["__file__"], "exec"), ns)
    assert ns["code_version"]()["dirty"] is False
    (repo / "results" / "r.csv").write_text("a\n1\n")  # a run rewriting its committed results
    assert ns["code_version"]()["dirty"] is False
    (repo / "src" / "adpo" / "_io.py").write_text("# edited\n")
    assert ns["code_version"]()["dirty"] is True
