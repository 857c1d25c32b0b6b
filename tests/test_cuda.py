"""CUDA parity: every loss, the log-prob helpers and the anchors give the CPU's answer on a GPU.

Skipped where there is no CUDA device (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``. The CPU float64 computation is the reference; on CUDA the
same float64 inputs must give the same loss and gradient to rounding, and bfloat16 inputs
(what a GPU trainer hands over) must give a float32 loss close to the float32 one.
"""

import pytest
import torch

from adpo.anchors import make_anchor
from adpo.logprobs import causal_lm_logps, linear_logps, selective_log_softmax, token_entropy
from adpo.losses import (
    adpo_loss,
    dapo_loss,
    dpo_loss,
    grpo_loss,
    gspo_loss,
    ipo_loss,
    kd_loss,
    kl_penalty_loss,
    opo_loss,
    ppo_loss,
    reverse_adpo_loss,
    sft_loss,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

B, G, T = 3, 4, 5


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    d = torch.float64
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mask[0, 1, 3:] = False
    mask[2, 0, 1:] = False
    return {
        "old": -torch.rand(B, G, T, generator=g, dtype=d) * 2,
        "ref": -torch.rand(B, G, T, generator=g, dtype=d) * 2,
        "rewards": torch.randn(B, G, generator=g, dtype=d),
        "tied": torch.tensor([[1.0, 0.0, 1.0, 0.5], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=d),
        "adv": torch.randn(B, G, generator=g, dtype=d),
        "q": torch.softmax(torch.randn(B, G, generator=g, dtype=d), -1),
        "mask": mask,
    }


# x = policy token log-probs [B, G, T]; t = the other inputs, on the same device
CASES = {
    "adpo_softmax": lambda x, t: adpo_loss(x, t["ref"], t["rewards"], mask=t["mask"], tau=0.7),
    "adpo_pl": lambda x, t: adpo_loss(
        x, t["ref"], t["tied"], mask=t["mask"], target="plackett_luce", ties="efron"
    ),
    "adpo_top1": lambda x, t: adpo_loss(x, t["ref"], t["tied"], mask=t["mask"], target="top1"),
    "adpo_tau_per_prompt": lambda x, t: adpo_loss(
        x, t["ref"], t["rewards"], mask=t["mask"], tau=torch.tensor([0.5, 1.0, 2.0]).to(x.device)
    ),
    "reverse_adpo": lambda x, t: reverse_adpo_loss(x, t["ref"], t["rewards"], mask=t["mask"]),
    "kd": lambda x, t: kd_loss(x, t["q"], mask=t["mask"], temperature=1.5),
    "opo_log": lambda x, t: opo_loss(x, t["ref"], t["rewards"], mask=t["mask"]),
    "opo_exact": lambda x, t: opo_loss(
        x, t["ref"], t["rewards"], mask=t["mask"], ratio="exact", ref_correction="sequence"
    ),
    "ppo": lambda x, t: ppo_loss(x, t["old"], t["adv"], t["mask"]),
    "grpo_kl": lambda x, t: grpo_loss(
        x, t["old"], t["adv"], t["mask"], beta=0.1, ref_logps=t["ref"]
    ),
    "gspo": lambda x, t: gspo_loss(x, t["old"], t["adv"], t["mask"]),
    "dapo": lambda x, t: dapo_loss(x, t["old"], t["adv"], t["mask"]),
    "kl_penalty": lambda x, t: kl_penalty_loss(x, t["old"], t["adv"], t["mask"], beta=0.5),
    "sft": lambda x, t: sft_loss(x, t["mask"]),
}


def _run(name, x, t):
    x = x.clone().requires_grad_()
    out = CASES[name](x, t)
    out.loss.backward()
    return out, x.grad


@pytest.mark.parametrize("name", list(CASES))
def test_loss_cuda_matches_cpu(name):
    cpu = _inputs()
    x = cpu["old"] + 0.05 * torch.randn(B, G, T, dtype=torch.float64)
    ref_out, ref_grad = _run(name, x, cpu)
    gpu = {k: v.cuda() for k, v in cpu.items()}
    out, grad = _run(name, x.cuda(), gpu)
    assert out.loss.device.type == "cuda" and grad.device.type == "cuda"
    torch.testing.assert_close(out.loss.cpu(), ref_out.loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-9, atol=1e-12)
    for k, v in out.metrics.items():  # metrics stay on the device, detached, and agree too
        assert v.device.type == "cuda" and not v.requires_grad, k
        torch.testing.assert_close(
            v.cpu().double(), ref_out.metrics[k].double(), rtol=1e-6, atol=1e-8
        )


@pytest.mark.parametrize("name", list(CASES))
def test_loss_cuda_bfloat16_inputs(name):
    cpu = _inputs()
    x = cpu["old"] + 0.05 * torch.randn(B, G, T, dtype=torch.float64)
    x16 = x.to(torch.bfloat16)
    b16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).cuda() for k, v in cpu.items()}
    f32 = {k: (v.float() if v.is_floating_point() else v) for k, v in b16.items()}
    f32["q"] = f32["q"] / f32["q"].sum(-1, keepdim=True)  # bf16 targets are renormalised
    want, _ = _run(name, x16.float().cuda(), f32)
    got, grad = _run(name, x16.cuda(), b16)
    # computed in float32 from the same bf16 values: the bf16 path loses nothing more
    assert got.loss.dtype == torch.float32, got.loss.dtype
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-6)


def test_pairwise_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    a, b, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(4))
    for fn in (
        lambda *z: dpo_loss(*z, beta=0.3, label_smoothing=0.1),
        lambda *z: ipo_loss(*z, beta=0.3),
    ):
        want = fn(a, b, rc, rr).loss
        got = fn(a.cuda(), b.cuda(), rc.cuda(), rr.cuda()).loss
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-12)


def test_logprob_helpers_cuda_match_cpu():
    g = torch.Generator().manual_seed(2)
    R, H, V = 300, 16, 257  # R not a multiple of the chunk: the last chunk is short
    hidden, W = torch.randn(R, H, generator=g), torch.randn(V, H, generator=g) * 0.3
    idx = torch.randint(0, V, (R,), generator=g)
    logits = hidden @ W.T
    want = torch.log_softmax(logits.double(), -1).gather(-1, idx[:, None]).squeeze(-1)
    for dev in ("cpu", "cuda"):
        got = selective_log_softmax(logits.to(dev), idx.to(dev), chunk_size=64)
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)
        h = hidden.to(dev, copy=True).requires_grad_()
        fused = linear_logps(h, W.to(dev), idx.to(dev), chunk_size=64)
        torch.testing.assert_close(fused.detach().cpu().double(), want, rtol=1e-5, atol=1e-5)
        fused.sum().backward()
        assert h.grad is not None and h.grad.device.type == dev
    ent = token_entropy(logits.cuda(), chunk_size=64).cpu()
    torch.testing.assert_close(ent, token_entropy(logits, chunk_size=64), rtol=1e-5, atol=1e-5)


def test_tiny_model_logps_and_anchors_on_cuda():
    pytest.importorskip("transformers")
    from adpo.testing import tiny_qwen3

    model = tiny_qwen3(40, hidden_size=32, num_layers=1).cuda()
    ids = torch.randint(3, 40, (4, 12), device="cuda")
    attn = torch.ones_like(ids)
    lp = causal_lm_logps(model, ids, attn, logits_to_keep=5)
    lp_cpu = causal_lm_logps(model.cpu(), ids.cpu(), attn.cpu(), logits_to_keep=5)
    model.cuda()
    torch.testing.assert_close(lp.cpu(), lp_cpu, rtol=1e-4, atol=1e-4)
    for kind in ("self", "ema", "on_policy"):
        anchor = make_anchor(kind, model)
        anchor.refresh(model)
        ref = anchor.anchor_logps(lambda m: causal_lm_logps(m, ids, attn, logits_to_keep=5))
        assert ref.device.type == "cuda" and not ref.requires_grad, kind
        torch.testing.assert_close(ref, lp.detach(), rtol=1e-4, atol=1e-4)
