"""Listwise losses in anchored coordinates: ADPO, reverse ADPO and KD.

Paper: "From Probability to Advantage: Unifying Alignment via Anchored Ranking" (ADPO).
Anchored logits (eq. 6)::

    u_i = (log πθ(y_i|x) − log π_ref(y_i|x)) / τ          # (B, G)

and ADPO minimises the anchored cross-entropy (eq. 9) ``−Σ_i q_i log softmax(u)_i``
against a target ``q`` (soft Boltzmann, Plackett–Luce ranking, top-1 or given).

Shapes: ``B`` prompts, ``G`` candidates ("the last axis is the list"), ``T`` tokens.
Token-level inputs ``[B, G, T]`` with ``mask`` are reduced to sequence sums first
(early reduction, paper app. F.2), so the loss itself costs ``O(B·G)`` (``O(B·G²)`` for
Plackett–Luce).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from adpo.losses._common import (
    LossOutput,
    check_choice,
    check_positive,
    check_tensor,
    compute_dtype,
    delta_metrics,
    entropy_from_logp,
    fail,
    masked_log_softmax,
    normalized_entropy,
    prepare_group,
)
from adpo.losses.advantages import (
    _rewards,
    check_targets,
    softmax_targets,
    target_choice,
    top1_targets,
    zero_signal_groups,
)

__all__ = ["adpo_loss", "kd_loss", "plackett_luce_nll", "reverse_adpo_loss"]

Target = Literal["softmax", "plackett_luce", "top1"]
Ties = Literal["breslow", "efron"]
SeqReduction = Literal["sum", "mean"]


def _tau(fn: str, tau: float | Tensor, B: int, dtype: torch.dtype, device) -> Tensor:
    """τ as a ``[B, 1]`` tensor: a float, a 0-d tensor or one value per prompt ``[B]``."""
    check_positive(fn, "tau", tau)
    t = torch.as_tensor(tau, dtype=dtype, device=device).detach()
    if t.dim() == 0:
        return t.expand(B, 1)
    if t.shape != (B,):
        raise fail(fn, f"`tau` must be a float or a [B] = [{B}] tensor, got shape {tuple(t.shape)}")
    return t[:, None]


def plackett_luce_nll(
    u: Tensor, rewards: Tensor, valid: Tensor, *, ties: Ties = "breslow"
) -> Tensor:
    """Plackett–Luce negative log-likelihood of the ranking induced by ``rewards``.

    For each counted candidate ``i`` that has at least one strictly lower-rewarded
    counted candidate, add ``logsumexp_{j: r_j ≤ r_i} u_j − u_i``. Candidates in the
    lowest tie block add nothing. Without ties this is exactly ListMLE (Xia et al., 2008);
    a group whose rewards are all equal has zero loss.

    Ties (several candidates with one reward, e.g. binary correctness) follow the
    survival-analysis conventions:

    * ``"breslow"``: every member of a tie block uses the full risk set
      ``{j: r_j ≤ r_i}`` (DESIGN.md). With binary rewards and ``k`` correct candidates this
      is ``k`` times the top-1 loss.
    * ``"efron"``: the ``k``-th member (``k = 0..d−1``) of a block ``D`` of size ``d`` uses
      ``log(Σ_R e^u − (k/d)·Σ_D e^u)``: the expected risk set when the tied members are
      removed one at a time in random order. This is closer to averaging ListMLE over all
      tie-breaking orders only for the blocks above the lowest one: the lowest block adds
      nothing under either rule, while an average over orders would also rank its members
      among themselves.

    Args:
        u: ``[B, G]`` anchored logits.
        rewards: ``[B, G]`` (finite where ``valid``).
        valid: ``[B, G]`` bool.
        ties: ``"breslow"`` or ``"efron"``.

    Returns:
        ``[B]`` loss per prompt (summed over positions).
    """
    check_choice("plackett_luce_nll", "ties", ties, ("breslow", "efron"))
    r = rewards.detach()
    vi, vj = valid[:, :, None], valid[:, None, :]  # (B, G, 1), (B, 1, G)
    ri, rj = r[:, :, None], r[:, None, :]
    risk = vj & (rj <= ri)  # (B, G, G): j in the risk set of i
    has_lower = (vj & (rj < ri)).any(-1) & valid  # (B, G)
    neg_inf = torch.full((), float("-inf"), dtype=u.dtype, device=u.device)
    uj = u[:, None, :].expand_as(risk)  # (B, G, G)
    lse_risk = torch.logsumexp(torch.where(risk, uj, neg_inf), dim=-1)  # (B, G)
    if ties == "efron":
        tied = vj & vi & (rj == ri)  # (B, G, G)
        d = tied.sum(-1).to(u.dtype)  # (B, G) size of i's tie block
        idx = torch.arange(u.shape[1], device=u.device)
        k = (tied & (idx[None, None, :] < idx[None, :, None])).sum(-1).to(u.dtype)  # (B, G)
        lse_tied = torch.logsumexp(torch.where(tied, uj, neg_inf), dim=-1)  # (B, G)
        # log(S_R − (k/d) S_D) = lse_R + log1p(−(k/d)·exp(lse_D − lse_R)), argument ≤ (d−1)/d
        frac = (k / d.clamp_min(1)) * torch.exp(torch.where(valid, lse_tied - lse_risk, neg_inf))
        lse_risk = lse_risk + torch.log1p(-frac)
    per = torch.where(has_lower, lse_risk - u, torch.zeros((), dtype=u.dtype, device=u.device))
    return per.sum(-1)


def _anchored(
    fn: str,
    logps: Tensor,
    ref_logps: Tensor,
    tau: float | Tensor,
    mask: Tensor | None,
    valid: Tensor | None,
    seq_reduction: str = "sum",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Early reduction and anchored logits. Returns ``(u, delta, valid, tau[B,1])``."""
    check_choice(fn, "seq_reduction", seq_reduction, ("sum", "mean"))
    _, _, v, _, delta = prepare_group(
        fn, logps, ref_logps, mask, valid, seq_reduction=seq_reduction
    )  # delta: (B, G)
    t = _tau(fn, tau, delta.shape[0], delta.dtype, delta.device)  # (B, 1)
    return delta / t, delta, v, t


def _target_distribution(
    fn: str,
    rewards: Tensor | None,
    targets: Tensor | None,
    target: str,
    beta: float,
    valid: Tensor,
    dtype: torch.dtype,
) -> tuple[Tensor | None, Tensor | None]:
    """Return ``(q, r)``: the target distribution (None for Plackett–Luce) and rewards."""
    target_choice(fn, target)
    if targets is not None:
        if rewards is not None:
            raise fail(fn, "pass either `rewards` (to build q) or `targets` (q itself), not both")
        if target != "softmax":
            raise fail(
                fn, f"`targets=` gives q directly; leave `target` at 'softmax', got {target!r}"
            )
        return check_targets(fn, targets, valid, dtype), None
    if rewards is None:
        raise fail(fn, "needs `rewards` [B, G] or an explicit `targets` distribution [B, G]")
    check_tensor(fn, "rewards", rewards)
    if rewards.shape != valid.shape:
        raise fail(
            fn,
            f"`rewards` must have shape {tuple(valid.shape)} (one per candidate), got "
            f"{tuple(rewards.shape)}",
        )
    r, _ = _rewards(fn, rewards, valid)
    r = r.to(dtype)
    if target == "softmax":
        check_positive(fn, "beta", beta)
        return softmax_targets(r, beta=beta, valid=valid), r  # in r's dtype
    if target == "top1":
        return top1_targets(r, valid=valid), r
    return None, r


def adpo_loss(
    logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor | None = None,
    *,
    targets: Tensor | None = None,
    target: Target = "softmax",
    tau: float | Tensor = 1.0,
    beta: float = 1.0,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
    ties: Ties = "breslow",
    seq_reduction: SeqReduction = "sum",
) -> LossOutput:
    """Anchored listwise cross-entropy (ADPO, eq. 9; algorithm 1, line 24).

    ``u = (logps − ref_logps) / tau`` per candidate, then

    * ``target="softmax"``: ``q = softmax(group_advantages(rewards) / beta)``; loss
      ``−Σ_i q_i log softmax(u)_i``. The minimiser over a free categorical is
      ``π ∝ π_ref · q^τ`` (app. C).
    * ``targets=`` an explicit ``[B, G]`` distribution (teacher soft labels: anchored KD),
      used as ``q`` directly.
    * ``target="top1"``: ``q`` uniform over the arg-max set of rewards (eq. 11). With
      ``G = 2`` and ``tau = 1/β`` this is exactly the DPO loss (app. D).
    * ``target="plackett_luce"``: NLL of the reward ranking (ListMLE, §4.4, the paper's
      LLM setting), ties per ``ties`` (see :func:`plackett_luce_nll`).

    The loss is summed over the list and averaged over prompts. ``ref_logps``,
    ``rewards`` and ``targets`` are detached.

    Args:
        logps: ``[B, G]`` sequence log-probs of the policy, or ``[B, G, T]`` token log-probs
            with ``mask``.
        ref_logps: anchor log-probs, same shape as ``logps``.
        rewards: ``[B, G]`` rewards (or scores); finite where counted.
        targets: ``[B, G]`` explicit target distribution (rows sum to 1).
        target: ``"softmax" | "plackett_luce" | "top1"``.
        tau: anchoring temperature τ > 0 (trust-region radius, app. A.3); a float or a
            ``[B]`` tensor (per-prompt adaptive temperature).
        beta: target temperature β_r of the softmax target.
        mask: ``[B, G, T]`` token mask for token-level inputs (True = counts).
        valid: ``[B, G]`` candidates that exist (groups with missing candidates); missing
            ones take no part in the softmax, the target or the ranking.
        ties: Plackett–Luce tie handling, ``"breslow"`` (default) or ``"efron"``.
        seq_reduction: how token-level inputs reduce to a candidate's score: ``"sum"``
            (default; ``log π(y) − log π_ref(y)``, the papers' sequence log-ratio) or
            ``"mean"`` (divided by the candidate's token count: the length-normalised score
            the ADPO authors' public code uses by default). See :func:`adpo_score_weights`
            and the losses guide for when to choose which.

    Returns:
        ``LossOutput`` with metrics ``anchored_entropy`` (nats, mean over prompts),
        ``anchored_entropy_norm`` (÷ log G, in [0, 1]), ``target_entropy`` (for
        Plackett–Luce: entropy of the first-position marginal, uniform over the top tie
        block), ``delta_abs_mean``/``delta_abs_max`` (|log πθ − log π_ref|),
        ``tau``, and ``zero_signal_frac`` when rewards are given.
    """
    fn = "adpo_loss"
    check_choice(fn, "ties", ties, ("breslow", "efron"))
    u, delta, v, t = _anchored(fn, logps, ref_logps, tau, mask, valid, seq_reduction)
    q, r = _target_distribution(fn, rewards, targets, target, beta, v, u.dtype)
    logp = masked_log_softmax(u, v)  # (B, G)
    if q is None:  # Plackett–Luce
        per_prompt = plackett_luce_nll(u, r, v, ties=ties)  # (B,)
        q_metric = top1_targets(r, valid=v)
    else:
        per_prompt = -(q * logp).sum(-1)  # (B,)
        q_metric = q
    metrics = _listwise_metrics(logp, q_metric, delta, v, t)
    if r is not None:
        metrics["zero_signal_frac"] = zero_signal_groups(r, v).to(u.dtype).mean()
    return LossOutput(per_prompt.mean(), metrics)


def adpo_score_weights(
    delta: Tensor,
    rewards: Tensor,
    *,
    target: Target = "softmax",
    tau: float | Tensor = 1.0,
    beta: float = 1.0,
    valid: Tensor | None = None,
    ties: Ties = "breslow",
) -> tuple[LossOutput, Tensor]:
    """The weights ``w = ∂(Σ_b L_b)/∂Δ`` of :func:`adpo_loss` at sequence scores ``Δ``.

    A listwise loss couples the ``G`` candidates of a prompt, but only through numbers: its
    gradient is ``Σ_i w_i ∇θ Δ_i`` with ``w_i`` a function of the whole group's current
    scores ``Δ = log πθ − log π_ref`` (summed or token-mean). Given ``Δ`` for every
    candidate of each group, this returns ``w`` (detached, float64) together with the
    loss (mean over prompts) and its metrics, so a trainer can back-propagate
    ``Σ_i w_i Δ_i(θ)`` over *any* split of the group's rows (micro-batches, processes) and
    get the whole-group gradient of ``Σ_b L_b`` exactly (divide by the number of prompts
    for the mean). The weights are computed by autograd through :func:`adpo_loss` itself:
    one formula, one place.

    Args:
        delta: ``[B, G]`` current sequence scores (numbers; no graph is kept).
        rewards: ``[B, G]``.
        target: as in :func:`adpo_loss`.
        tau: as in :func:`adpo_loss` (a float or ``[B]``).
        beta: as in :func:`adpo_loss`.
        valid: ``[B, G]``, as in :func:`adpo_loss`.
        ties: as in :func:`adpo_loss`.

    Returns:
        ``(LossOutput, w)`` with ``w`` ``[B, G]``, 0 outside ``valid``.
    """
    fn = "adpo_score_weights"
    check_tensor(fn, "delta", delta)
    if delta.dim() != 2:
        raise fail(fn, f"`delta` must be [B, G] sequence scores, got shape {tuple(delta.shape)}")
    d = delta.detach().to(torch.float64).requires_grad_(True)
    with torch.enable_grad():
        out = adpo_loss(d, torch.zeros_like(d), rewards, target=target, tau=tau, beta=beta,
                        valid=valid, ties=ties)  # fmt: skip
        (w,) = torch.autograd.grad(out.loss * d.shape[0], d)
    metrics = {k: v.detach() for k, v in out.metrics.items()}
    return LossOutput(out.loss.detach(), metrics), w


def reverse_adpo_loss(
    logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor | None = None,
    *,
    targets: Tensor | None = None,
    tau: float | Tensor = 1.0,
    beta: float = 1.0,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
    seq_reduction: SeqReduction = "sum",
) -> LossOutput:
    """Reverse-ADPO: ``KL(p̃θ ‖ q)`` in anchored coordinates (ADPO paper, app. B.2).

    ``p̃θ = softmax(u)`` with ``u = (logps − ref_logps)/tau`` as in :func:`adpo_loss`, and
    ``q = softmax(group_advantages(rewards)/beta)`` or an explicit ``targets``. The exact
    reverse KL over the candidate set, ``Σ_i p̃_i (log p̃_i − log q_i)``, is mode-seeking:
    the paper's hypothetical variant that links ADPO to entropy-regularised RL (eq. 22).
    Only full-support targets are allowed (``log q`` must be finite), so there is no
    top-1 or Plackett–Luce form.

    Args/shapes as in :func:`adpo_loss`. Returns the same metrics.
    """
    fn = "reverse_adpo_loss"
    u, delta, v, t = _anchored(fn, logps, ref_logps, tau, mask, valid, seq_reduction)
    q, r = _target_distribution(fn, rewards, targets, "softmax", beta, v, u.dtype)
    if ((q <= 0) & v).any():
        raise fail(fn, "reverse KL needs a target with full support: `targets` has zeros")
    logp = masked_log_softmax(u, v)  # (B, G)
    zero = torch.zeros((), dtype=u.dtype, device=u.device)
    logq = torch.where(v, q.clamp_min(torch.finfo(u.dtype).tiny).log(), zero)
    per_prompt = torch.where(v, logp.exp() * (logp - logq), zero).sum(-1)  # (B,)
    metrics = _listwise_metrics(logp, q, delta, v, t)
    if r is not None:
        metrics["zero_signal_frac"] = zero_signal_groups(r, v).to(u.dtype).mean()
    return LossOutput(per_prompt.mean(), metrics)


def kd_loss(
    logps: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
) -> LossOutput:
    """Knowledge distillation: forward ``KL(q ‖ softmax(logps / T))`` in absolute coordinates.

    The ADPO paper's KD baseline (table 1: zero anchor, soft teacher target; app. E): the
    student's own log-probs over the candidate set, with no reference subtracted. As in
    Hinton et al. (2015) the loss is multiplied by ``T²`` so gradient scale does not depend
    on the temperature. It equals :func:`adpo_loss` with ``ref_logps = 0``,
    ``targets = q``, ``tau = T`` up to the constant ``−H(q)`` and the factor ``T²``.

    Args:
        logps: ``[B, G]`` student log-probs (or logits) of the candidates, or
            ``[B, G, T]`` with ``mask``.
        targets: ``[B, G]`` teacher distribution over the candidates (rows sum to 1).
        temperature: softening temperature ``T`` > 0.
        mask: as in :func:`adpo_loss`.
        valid: as in :func:`adpo_loss`.

    Returns:
        ``LossOutput``; metrics ``kl``, ``student_entropy`` (also reported as
        ``anchored_entropy`` with the zero anchor), ``target_entropy``.
    """
    fn = "kd_loss"
    check_tensor(fn, "logps", logps)
    check_positive(fn, "temperature", temperature)
    zeros = torch.zeros_like(logps, dtype=compute_dtype(logps))
    u, delta, v, t = _anchored(fn, logps, zeros, temperature, mask, valid)
    q = check_targets(fn, targets, v, u.dtype)
    logp = masked_log_softmax(u, v)  # (B, G)
    zero = torch.zeros((), dtype=u.dtype, device=u.device)
    logq = torch.where(q > 0, q.clamp_min(torch.finfo(u.dtype).tiny).log(), zero)
    kl = torch.where(v, q * (logq - logp), zero).sum(-1)  # (B,)
    metrics = _listwise_metrics(logp, q, delta, v, t)
    metrics["kl"] = kl.detach().mean()
    metrics["student_entropy"] = metrics["anchored_entropy"]
    return LossOutput(kl.mean() * temperature**2, metrics)


def _listwise_metrics(
    logp: Tensor, q: Tensor, delta: Tensor, valid: Tensor, tau: Tensor
) -> dict[str, Tensor]:
    logp, q = logp.detach(), q.detach()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logq = torch.where(q > 0, q.clamp_min(torch.finfo(q.dtype).tiny).log(), zero)
    top = logp.masked_fill(~valid, float("-inf")).argmax(-1, keepdim=True)  # (B, 1)
    return {
        "anchored_entropy": entropy_from_logp(logp, valid).mean(),
        "anchored_entropy_norm": normalized_entropy(logp, valid).mean(),
        "target_entropy": (-(q * logq).sum(-1)).mean(),
        **delta_metrics(delta, valid),
        "tau": tau.mean(),
        # does p̃'s arg-max fall in q's arg-max set (offline "top-1 accuracy")
        "anchored_top1_agreement": (q.gather(-1, top) >= q.amax(-1, keepdim=True))
        .to(q.dtype)
        .mean(),
    }
