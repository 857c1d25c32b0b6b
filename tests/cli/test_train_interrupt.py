"""Ctrl-C during ``adpo train``: a checkpoint, the command that resumes it, exit status 130.

A real ``adpo train`` in a subprocess gets SIGINT once training runs; the checkpoint it
leaves is then resumed with the command it printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading

import pytest


@pytest.fixture
def local(tmp_path):
    from adpo.data.arithmetic import ArithmeticTask
    from adpo.testing import char_tokenizer, tiny_qwen3

    tok = char_tokenizer()
    tiny_qwen3(len(tok), hidden_size=32, num_layers=1).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rows = ArithmeticTask(digits=1).sample(32, seed=0)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def test_sigint_saves_a_resumable_checkpoint_and_says_how_to_resume(local):
    out = local / "out"
    argv = [
        "train", "--model", str(local / "model"), "--dataset", str(local / "data.jsonl"),
        "--output_dir", str(out), "--reward", "arithmetic", "--chat", "no",
        "--num_generations", "4", "--per_device_train_batch_size", "8",
        "--max_completion_length", "3", "--learning_rate", "1e-2", "--report_to", "none",
        "--activation_checkpointing", "false", "--disable_tqdm", "true",
        "--max_steps", "100000", "--save_steps", "100000", "--logging_steps", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "adpo.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    training = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "Ctrl-C saves a checkpoint" in line:
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert training.wait(timeout=600), "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=600) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=60)
    err = "".join(lines)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    stopped = re.search(r"stopped at step (\d+); saved (\S+)\nresume with: (.+)\n", err)
    assert stopped, err
    step, checkpoint, command = int(stopped[1]), stopped[2], stopped[3]
    assert checkpoint == str(out / f"checkpoint-{step}")
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert (out / f"checkpoint-{step}" / "adpo_trainer_state_rank0.pt").is_file()  # round buffer
    assert not (out / "model.safetensors").exists()  # the run did not finish: no final model

    # the printed command resumes it; one more step, then a checkpoint
    resume = shlex.split(command)
    assert resume[:2] == ["adpo", "train"]
    assert resume[-2:] == ["--resume_from_checkpoint", checkpoint]
    resume = resume[2:]
    for flag, value in (("--max_steps", step + 1), ("--save_steps", step + 1)):
        resume[resume.index(flag) + 1] = str(value)
    done = subprocess.run(
        [sys.executable, "-m", "adpo.cli", "train", *resume],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming from {checkpoint}" in done.stderr
    state = json.loads((out / f"checkpoint-{step + 1}" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h][-2:] == [step, step + 1]
    # a resume says nothing about the tied lm_head, and no FutureWarning comes out of a run
    assert "missing keys" not in done.stderr and "FutureWarning" not in done.stderr, done.stderr
    assert "FutureWarning" not in err


def test_a_second_ctrl_c_stops_at_once():
    from adpo.cli.train import _StopOnInterrupt

    stop = _StopOnInterrupt()
    stop._handle(signal.SIGINT, None)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


def test_ctrl_c_outside_training_is_one_line_and_130(capsys):
    from adpo.cli._args import run_command

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_command("adpo train", interrupted, []) == 130
    assert capsys.readouterr().err == "adpo train: interrupted\n"


def test_the_resume_command_is_this_run_less_how_it_started():
    from adpo.cli.train import _resume_command

    argv = ["--model", "m", "--resume_from_checkpoint", "out/checkpoint-1", "--max-steps", "5",
            "--overwrite-output-dir", "true", "--resume-from-checkpoint=latest",
            "--overwrite_output_dir", "--prompt_suffix", "two words"]  # fmt: skip
    assert _resume_command(argv, "out/checkpoint-3") == (
        "adpo train --model m --max-steps 5 --prompt_suffix 'two words' "
        "--resume_from_checkpoint out/checkpoint-3"
    )
