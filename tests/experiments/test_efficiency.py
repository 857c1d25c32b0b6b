"""The efficiency benchmark runs and measures memory deterministically (no timing asserts)."""

import json

import pytest
import torch

from adpo.experiments.efficiency import EfficiencyConfig, logprob_functions, run, saved_bytes


def saved_mb(**kw):
    fns = logprob_functions(EfficiencyConfig(memory_rows=256, vocab=1024, chunk_size=64, **kw))
    return {k: saved_bytes(f) / 2**20 for k, f in fns.items()}


def test_saved_memory_bf16_and_fp32():
    bf16 = saved_mb()
    full, chunked, fused = (
        bf16[k] for k in ("full log_softmax", "selective_log_softmax", "linear_logps")
    )
    logits_mb = 256 * 1024 * 2 / 2**20  # one bf16 [R, V] tensor
    # full keeps the float32 log-softmax (2× the logits); chunked keeps only the bf16 logits
    assert full - chunked == pytest.approx(logits_mb, rel=0.01)
    assert fused < chunked - 0.9 * logits_mb  # the LM head per chunk: never the [R, V] logits
    fp32 = saved_mb(logits_dtype="float32")
    # with float32 logits, chunking keeps the logits instead of the log-softmax: no saving
    assert fp32["selective_log_softmax"] == pytest.approx(fp32["full log_softmax"], rel=0.05)


def test_run_writes_results(tmp_path):
    cfg = EfficiencyConfig(
        out=str(tmp_path),
        prompts=2,
        group=3,
        tokens=8,
        repeats=1,
        model_tokens=4,
        model_hidden=16,
        model_layers=1,
        model_vocab=32,
        vocab=64,
        memory_rows=16,
        chunk_size=8,
    )
    run(cfg)
    data = json.loads((tmp_path / "efficiency.json").read_text())
    assert (tmp_path / "efficiency.png").stat().st_size > 0
    assert [r["method"] for r in data["losses"]] == [
        "adpo-pl",
        "adpo",
        "opo",
        "grpo",
        "gspo",
        "dapo",
    ]
    assert next(r for r in data["losses"] if r["method"] == "grpo")["loss_vs_grpo"] == 1.0
    with pytest.raises(ValueError, match="group"):
        EfficiencyConfig(group=1)
    with pytest.raises(ValueError, match="model_dtype"):
        EfficiencyConfig(model_dtype="float16")
    with pytest.raises(ValueError, match="device"):
        EfficiencyConfig(device="gpu0")


def test_cuda_device_rejected_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        EfficiencyConfig(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_reports_peak_memory(tmp_path):
    cfg = EfficiencyConfig(
        out=str(tmp_path),
        device="cuda",
        model_dtype="bfloat16",
        prompts=2,
        group=4,
        tokens=16,
        repeats=2,
        model_tokens=8,
        model_hidden=32,
        model_layers=1,
        model_vocab=64,
        vocab=8192,
        memory_rows=1024,
        chunk_size=128,
    )
    data = run(cfg)
    assert data["device"].startswith("cuda")
    mem = data["logprob_memory"]
    # the fused LM head never holds the [R, V] logits: a lower CUDA peak than the full path
    assert mem["linear_logps"]["peak_MB"] < mem["full log_softmax"]["peak_MB"]
