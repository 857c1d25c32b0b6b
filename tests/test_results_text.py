"""The numbers the docs quote are the committed results' numbers, recomputed from their files.

Each test recomputes, from the CSV/JSON files under ``results/``, the numbers one page of
``docs/reproducing/`` (and the README) states in its verdicts and readings, formats them as
the page does, and checks the page says exactly that. Re-running a benchmark changes the
files; this test then names every sentence that needs re-reading. Fast: files only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from adpo._io import read_csv
from adpo.metrics import paired_differences

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def page(name: str) -> str:
    """A docs page (or ``README``) with its line breaks and indentation collapsed to spaces."""
    path = ROOT / "README.md" if name == "README" else ROOT / "docs" / "reproducing" / f"{name}.md"
    return re.sub(r"\s+", " ", path.read_text())


def quoted(name: str, *snippets: str) -> None:
    text = page(name)
    missing = [s for s in snippets if s not in text]
    where = "README.md" if name == "README" else f"docs/reproducing/{name}.md"
    assert not missing, f"{where} should say {missing} (recomputed from results/)"


def num(x: float, d: int = 3, sign: bool = False) -> str:
    """``x`` as the prose writes it: ``d`` decimals, a typographic minus, ``+`` if ``sign``."""
    s = f"{x:+.{d}f}" if sign else f"{x:.{d}f}"
    return s.replace("-", "−")


def bounds(v: dict[str, Any], d: int = 3) -> str:
    """``[−0.014, −0.004]``: the 95 % t-interval of a paired mean, as the prose has it."""
    lo, hi = v["mean"] - v["ci95"], v["mean"] + v["ci95"]
    return f"[{num(lo, d, True)}, {num(hi, d, True)}]"


def interval(v: dict[str, Any], d: int = 3) -> str:
    """``−0.009 [−0.014, −0.004]``: a paired mean and its 95 % t-interval."""
    return f"{num(v['mean'], d, True)} {bounds(v, d)}"


def summary(folder: str, name: str = "summary.json") -> dict[str, Any]:
    return json.loads((RESULTS / folder / name).read_text())


def runs(folder: str, name: str = "runs.csv") -> list[dict[str, Any]]:
    return read_csv(RESULTS / folder / name)


def span(values: list[float], d: int, unit: str = "") -> str:
    """``2.3–2.6×``: the range of ``values`` at ``d`` decimals."""
    return f"{min(values):.{d}f}–{max(values):.{d}f}{unit}"


# --------------------------------------------------------------------------- saturation


def test_saturation_page():
    s = summary("saturation")["methods"]
    at = {m: v["grad_abs"] for m, v in s.items()}
    rows = {"SFT (= DPO β=1 = ADPO-PL on G=2)": "SFT", "ADPO (softmax target)": "ADPO",
            "OPO (log ratio, the paper's surrogate)": "OPO"}  # fmt: skip
    for label, m in rows.items():
        cells = " | ".join(f"{at[m][p]:.3f}" for p in ("0.6", "0.9", "0.99", "0.999"))
        quoted("saturation", f"| {label} | {cells} |")
    assert s["GRPO"]["grad_abs"]["0.999"] == s["DAPO"]["grad_abs"]["0.999"] == 0.0
    # the fixed points (sign changes) and the sign of the gradient past them
    fixed = {m: v["fixed_point"] for m, v in s.items()}
    assert [m for m, p in fixed.items() if p is not None] == ["ADPO", "OPO", "OPO-exact"]
    assert s["OPO"]["grad"]["0.999"] > 0 and s["ADPO"]["grad"]["0.999"] > 0  # pulls back
    quoted("saturation", f"**p = {fixed['OPO']:.3f}**", f"**{fixed['ADPO']:.3f}**",
           f"turns back, at p = {fixed['OPO-exact']:.3f}", f"({at['OPO-exact']['0.999']:.4f} at p = 0.999)",
           f"0.250 at p = 0.6 to 0 at **p = {fixed['OPO']:.3f}**",
           f"{at['OPO']['0.9']:.3f} at p = 0.9, {at['OPO']['0.999']:.3f} at p = 0.999")  # fmt: skip
    for name in ("README", "index"):
        quoted(name, f"{at['OPO']['0.999']:.2f} at p = 0.999", f"{fixed['OPO']:.3f}",
               f"{fixed['ADPO']:.3f}")  # fmt: skip
    # OPO's drive toward y+ is below SFT's above this p (from the CSV's signed gradients)
    curve = read_csv(RESULTS / "saturation" / "saturation.csv")
    grad = {(r["method"], r["p"]): r["grad"] for r in curve}
    ps = sorted(p for m, p in grad if m == "OPO")
    cross = next(p for p in ps if grad[("OPO", p)] > grad[("SFT", p)])
    assert all(grad[("OPO", p)] > grad[("SFT", p)] for p in ps if p >= cross)
    quoted("saturation", f"for every p above {cross:.2f}")


# --------------------------------------------------------------------------- efficiency, trainer


def test_efficiency_page():
    cpu = {r["method"]: r for r in summary("efficiency", "efficiency.json")["losses"]}
    ours = [1 / cpu[m]["loss_vs_grpo"] for m in ("adpo-pl", "adpo", "opo")]
    update = max(abs(r["update_vs_grpo"] - 1) for r in cpu.values())
    h100 = summary("efficiency-h100/qwen3-1.7b-shape", "efficiency.json")
    h_update = max(abs(r["update_vs_grpo"] - 1) for r in h100["losses"])
    peak = h100["logprob_memory"]["linear_logps"]["peak_vs_full"]
    for name in ("efficiency", "README"):
        quoted(name, f"{span(ours, 1)}× faster", f"±{round(100 * update)} %",
               f"{100 * h_update:.1f} %")  # fmt: skip
    quoted("index", f"{span(ours, 1)}× faster", f"±{round(100 * update)} %",
           f"CUDA peak {round(100 * peak)} %")  # fmt: skip


def test_trainer_page():
    rows = {r["loss"]: r for r in summary("trainer")["rows"]}
    ours = ("adpo-pl", "adpo", "opo")
    mem = [rows[x]["memory_vs_grpo"] for x in ours]
    time = [rows[x]["time_vs_grpo"] for x in ours]
    extra = [rows[x]["loss_side_ms"] - rows["grpo"]["loss_side_ms"] for x in ours]
    theirs = {round(rows[x]["time_vs_grpo"], 2) for x in ("gspo", "dapo")}
    assert theirs == {0.96}
    quoted("trainer", f"{span(mem, 3)}× GRPO's", f"{span(time, 2)}×", "measure 0.96×",
           f"{span(extra, 1)} ms")  # fmt: skip
    for name in ("README", "index"):
        quoted(name, f"{span(time, 2)}×", "0.96×")


# --------------------------------------------------------------------------- distillation


def test_distill_page():
    cheetah = summary("distill/HalfCheetah-v5")["methods"]
    hopper = summary("distill/Hopper-v5")["methods"]
    anchored = [m for m in cheetah if m.startswith(("ADPO", "OPO")) and m != "ADPO-EMA"]
    ratios = [cheetah[m]["return_ratio"] for m in anchored]
    kl_times = [
        env[m]["kl_to_teacher"] / env["KD"]["kl_to_teacher"]
        for env in (cheetah, hopper)
        for m in ("ADPO-self", "ADPO-teacher")
    ]
    quoted("distill", f"KD reaches {cheetah['KD']['return_ratio']:.2f} of the teacher",
           f"{span(ratios, 2)} of the teacher on HalfCheetah",
           f"reaches {cheetah['ADPO-EMA']['return_ratio']:.2f}", f"raises it {span(kl_times, 1)}×")  # fmt: skip
    for name in ("README", "index"):
        quoted(name, f"KD reaches {cheetah['KD']['return_ratio']:.2f} of the teacher")


# --------------------------------------------------------------------------- reasoning


def test_reasoning_page():
    rows = runs("reasoning")
    d = paired_differences(rows, ("accuracy_final", "reward_peak", "reward_final"), base="grpo",
                           by="loss", pair="seed")  # fmt: skip
    per = summary("reasoning")["per_loss"]
    below = [x for x in ("adpo-pl", "adpo", "opo", "gspo") if d[x]["reward_final"]["n_below"] == 5]
    assert below == ["adpo-pl", "adpo", "opo", "gspo"]
    assert all(d[x]["reward_final"]["mean"] + d[x]["reward_final"]["ci95"] < 0 for x in below)
    quoted("reasoning",
           f"ADPO-PL {interval(d['adpo-pl']['reward_final'])}, ADPO {interval(d['adpo']['reward_final'])}, "
           f"OPO {interval(d['opo']['reward_final'])}, GSPO {interval(d['gspo']['reward_final'])}",
           f"ADPO's peak reward too ({interval(d['adpo']['reward_peak'])}, 5 of 5)",
           f"and GSPO's ({interval(d['gspo']['reward_peak'])})",
           f"DAPO is level with GRPO ({interval(d['dapo']['reward_final'])})",
           f"paired {num(d['adpo-pl']['reward_peak']['mean'], 3, True)}, 95 % interval "
           f"{bounds(d['adpo-pl']['reward_peak'])}",
           f"({interval(d['adpo-pl']['accuracy_final'])})",
           f"(+0.007 {bounds(d['adpo']['accuracy_final'])})",
           f"({per['adpo-pl']['reward_peak']['mean']:.3f} vs {per['grpo']['reward_peak']['mean']:.3f} mean;",
           f"GRPO ends at {per['grpo']['reward_final']['mean']:.3f}")  # fmt: skip
    worst = max(abs(v["accuracy_final"]["mean"]) for v in d.values())
    for name in ("reasoning", "index", "README"):
        quoted(name, f"within {100 * worst:.1f} points of GRPO's")
    late = {x: per[x]["grad_norm_late_over_early"] for x in ("opo", "grpo")}
    quoted("reasoning", f"OPO keeps {late['opo']['mean']:.2f} ± {late['opo']['std']:.2f} and GRPO "
           f"{late['grpo']['mean']:.2f} ± {late['grpo']['std']:.2f}",
           f"({per['opo']['grad_norm_late']['mean']:.2f} vs {per['grpo']['grad_norm_late']['mean']:.2f})")  # fmt: skip
    gains = [r["accuracy_final"] - r["accuracy_before"] for r in rows]
    assert min(gains) > 0  # every objective, every seed
    quoted(
        "reasoning",
        f"by {round(100 * min(gains))} to {round(100 * max(gains))} points in 500 steps",
    )
    seed3 = {r["loss"]: r["grad_norm_late_over_early"] for r in rows if r["seed"] == 3}
    quoted("reasoning", f"OPO's (to {seed3['opo']:.2f} of its early value) more than GRPO's "
           f"({seed3['grpo']:.2f}), GSPO's ({seed3['gspo']:.2f}) and DAPO's ({seed3['dapo']:.2f})")  # fmt: skip


# --------------------------------------------------------------------------- long reasoning


def _long(folder: str, experiment: str = "long") -> tuple[list[dict], dict[str, Any]]:
    rows = [r for r in runs(folder) if r["phase"] == "main" and r["experiment"] == experiment]
    metrics = ("accuracy_final", "reward_first", "reward_peak", "reward_final", "entropy_late")
    return rows, paired_differences(rows, metrics, base="grpo", by="loss", pair="seed")


def test_reasoning_long_page():
    rows, d = _long("reasoning_long")
    quoted("reasoning-long",
           f"reward is {interval(d['adpo-pl']['reward_peak'])}",
           f"ADPO-softmax {interval(d['adpo']['reward_peak'])}",
           f"{interval(d['adpo']['accuracy_final'])} over GRPO is positive on "
           f"{d['adpo']['accuracy_final']['n_above']} of 5 seeds",
           f"{interval(d['opo']['reward_first'])} in the first rounds (above on "
           f"{d['opo']['reward_first']['n_above']} of 5 seeds)",
           f"{interval(d['opo']['reward_final'])} in the last")  # fmt: skip
    assert d["opo"]["entropy_late"]["n_below"] == 5
    # no collapse at the chosen lrs
    assert not any(r["collapsed"] for r in rows)
    _, d3 = _long("reasoning_long_shared_lr")
    quoted("reasoning-long",
           f"{interval(d3['opo']['reward_first'])} in the first rounds and "
           f"{interval(d3['opo']['reward_final'])} in the last",
           f"({interval(d3['dapo']['accuracy_final'])})",
           f"final reward too ({interval(d3['adpo']['reward_final'])})",
           f"OPO keeps more than GRPO on {d3['opo']['entropy_late']['n_above']} of 3 seeds "
           f"({interval(d3['opo']['entropy_late'])})",
           f"({interval(d3['dapo']['entropy_late'])})")  # fmt: skip
    rows5, d5 = _long("reasoning_long_shared_lr_5e-4")
    collapsed = {
        x: sum(r["collapsed"] for r in rows5 if r["loss"] == x) for x in ("adpo-pl", "dapo", "grpo")
    }
    assert collapsed == {"adpo-pl": 2, "dapo": 1, "grpo": 0}
    quoted("reasoning-long",
           f"(paired {num(d5['adpo-pl']['accuracy_final']['mean'], 3, True)}, 95 % interval "
           f"{bounds(d5['adpo-pl']['accuracy_final'])}",
           f"(1 of 3 seeds; {interval(d5['dapo']['accuracy_final'])})",
           f"OPO is level with GRPO ({interval(d5['opo']['entropy_late'])})")  # fmt: skip
    s = summary("reasoning_long")
    ent = s["claims"]
    quoted("reasoning-long", f"{ent['entropy_late_sequence_level_mean']:.4f} against "
           f"{ent['entropy_late_token_level_mean']:.4f}")  # fmt: skip
    grads = s["claims"]["grad_norm_late_over_early"]
    quoted("reasoning-long", f"late/early gradient norm {grads['opo']:.2f}",
           f"GRPO keeps {grads['grpo']:.2f}")  # fmt: skip
    for name in ("README", "index"):
        quoted(name, "(2/3 seeds")


# --------------------------------------------------------------------------- vocabulary


VERDICTS = ("holds", "holds in part", "not reproduced", "inconclusive", "untestable here")


@pytest.mark.parametrize(
    "name",
    ["README", "index", "saturation", "efficiency", "bandits", "offline-listwise", "reasoning",
     "reasoning-long", "trainer", "distill"],
)  # fmt: skip
def test_every_verdict_uses_the_vocabulary(name):
    """A bold verdict (``**Verdict: …**``, ``**claim: …**``, ``**…**``) is one of the five
    words, every page states some, and no bold phrase reads like a verdict outside them."""
    text = page(name)
    said = []
    for b in re.findall(r"\*\*([^*]+?)\*\*", text):
        tail = re.sub(r"^Verdicts?:\s*", "", b.strip()).rstrip(".:,").split(": ")[-1]
        if tail.startswith(("holds", "not reproduced", "reproduced", "partly", "mostly",
                            "inconclusive", "untestable", "not tested")):  # fmt: skip
            assert tail in VERDICTS, f"{name}: **{b}** is not a verdict of {VERDICTS}"
            said.append(tail)
    assert said, f"{name}: no verdict in the vocabulary {VERDICTS}"
    for old in ("holds, larger", "mostly not reproduced", "not reproduced at CPU size", ": partly"):
        assert old not in text, f"{name}: {old!r} is not a verdict of the vocabulary"


def test_the_vocabulary_is_defined_once_on_the_index():
    text = page("index")
    for word in VERDICTS:
        assert f"| **{word}** |" in text
    assert "say what would decide it" in text or "says what would decide it" in text


# --------------------------------------------------------------------------- recorded commands

CONFIGS = {  # the command word → (module, its config dataclass: what `main` hands to tyro)
    "bandits": ("adpo.experiments.bandits", "BanditsConfig"),
    "listwise": ("adpo.experiments.offline_listwise", "OfflineListwiseConfig"),
    "saturation": ("adpo.experiments.saturation", "SaturationConfig"),
    "efficiency": ("adpo.experiments.efficiency", "EfficiencyConfig"),
    "reasoning": ("adpo.experiments.reasoning", "ReasoningConfig"),
    "reasoning-long": ("adpo.experiments.reasoning_long", "ReasoningLongConfig"),
    "trainer": ("adpo.experiments.trainer_bench", "TrainerBenchConfig"),
    "distill": ("adpo.experiments.distill", "DistillConfig"),
    "distill-teacher": ("adpo.experiments.distill_teacher", "TeacherConfig"),
    "demo": ("adpo.experiments.demo", "DemoConfig"),
}


def _recorded_commands() -> list[tuple[str, str]]:
    out = []
    for path in sorted(RESULTS.rglob("*.json")):
        s = json.loads(path.read_text())
        if not isinstance(s, dict):
            continue
        cmds = [s.get("command"), s.get("replot_command"), *(s.get("commands") or [])]
        out += [(str(path.relative_to(ROOT)), c) for c in cmds if isinstance(c, str)]
    return out


@pytest.mark.parametrize(("where", "command"), _recorded_commands())
def test_every_recorded_command_is_one_the_cli_accepts(where, command, monkeypatch):
    """A committed result's command re-makes it: the current CLI parses it (a CUDA command
    is parsed as on a machine with CUDA)."""
    import importlib
    import shlex

    import torch
    import tyro

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    words = shlex.split(command)
    assert words[0] == "adpo", f"{where}: {command!r} is not an `adpo` command"
    if words[1] == "bench":
        name, args = words[2], words[3:]
        from adpo.cli import BENCHMARKS

        assert name in BENCHMARKS, f"{where}: `adpo bench {name}` is no benchmark now ({command!r})"
    else:
        name, args = words[1], words[2:]
    module, cls = CONFIGS[name]
    config = getattr(importlib.import_module(module), cls)
    try:
        tyro.cli(config, args=args)
    except SystemExit:  # tyro's answer to an unknown or malformed flag, or a refused value
        pytest.fail(f"{where}: the CLI rejects the recorded command {command!r}")


def test_every_recorded_run_says_which_code_made_it():
    """Each committed file that records a command records the code too: the commit (run
    since provenance was recorded) or what git history recovered (``provenance_recovered``)."""
    missing = []
    for path in sorted(RESULTS.rglob("*.json")):
        s = json.loads(path.read_text())
        if not isinstance(s, dict) or "command" not in s:
            continue
        commit = (s.get("environment") or {}).get("commit")
        recovered = (s.get("provenance_recovered") or {}).get("results_committed_in")
        if not (commit or recovered):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"no commit recorded or recovered in {missing}"


# --------------------------------------------------------------------------- bandits tables

BANDIT_COLUMNS = ("softmax fix", "softmax dyn", "PL fix", "PL dyn", "raw fix", "raw dyn",
                  "DPO-hard", "DPO-soft", "PPO", "TRPO", "GRPO", "OPO fix", "OPO dyn")  # fmt: skip


def bandits_tables(s: dict[str, Any]) -> list[str]:
    """The bandits page's three tables (WinMass per scenario, anchors, capacity) from its
    ``summary.json``; ``python tests/test_results_text.py bandits`` prints them."""
    meths = s["methods"]
    head = "| scenario | " + " | ".join(BANDIT_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(meths) + 1)]
    for sc in s["scenarios"]:
        cells = []
        for m in meths:
            v = f"{s['winmass'][sc][m]['mean']:.2f}"
            best, tied = s["best"][sc] == m, m in s["tied_with_best"][sc]
            cells.append(f"**{v}**" if best else f"*{v}*" if tied else v)
        lines.append(f"| {sc} | " + " | ".join(cells) + " |")
    lines.append("| mean | " + " | ".join(f"{s['mean_winmass'][m]:.3f}" for m in meths) + " |")
    lines.append(
        "| best / tied with best | "
        + " | ".join(f"{s['wins'][m]} / {s['top_group_count'][m]}" for m in meths)
        + " |"
    )
    winmass = "\n".join(lines)
    lines = [
        "| family | fixed → dynamic (final) | fixed → dynamic (online) | scenarios where dynamic wins |",
        "|---|---|---|---|",
    ]
    for fam, v in s["anchors"].items():
        on = s["anchors_online"][fam]
        wins = sum(g > 0 for g in s["anchors_gain_pct_by_scenario"][fam].values())
        lines.append(
            f"| {fam} | {v['fixed']:.3f} → {v['dynamic']:.3f} ({v['gain_pct']:+.0f} %) | "
            f"{on['fixed']:.3f} → {on['dynamic']:.3f} ({on['gain_pct']:+.0f} %) | "
            f"{wins} / {len(s['scenarios'])} |"
        )
    anchors = "\n".join(lines)
    lines = ["| hidden | " + " | ".join(BANDIT_COLUMNS) + " | reference |",
             "|" + "---|" * (len(meths) + 2)]  # fmt: skip
    for h in sorted(s["scaling"], key=int):
        cells = [f"{s['scaling'][h][m]:.2f}" for m in meths] + [f"{s['scaling_reference'][h]:.2f}"]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    return [winmass, anchors, "\n".join(lines)]


def test_bandits_page():
    s = summary("bandits")
    raw = (ROOT / "docs" / "reproducing" / "bandits.md").read_text()
    for table in bandits_tables(s):
        assert table in raw, f"docs/reproducing/bandits.md: a table differs from\n{table}"
    gains = [v["gain_pct"] for v in s["anchors"].values()]
    quick = [v["gain_pct"] for v in summary("bandits_quick")["anchors"].values()]
    for name in ("bandits", "index", "README"):
        quoted(name, f"+{min(gains):.0f} % to +{max(gains):.0f} %")
    quoted("bandits", f"+{min(quick):.0f} % to +{max(quick):.0f} %")
    quoted("bandits", f"best in {s['wins']['TRPO']}/12", f"(best or tied in {s['top_group_count']['OPO/dynamic']}/12)",
           f"then GRPO ({s['top_group_count']['GRPO']}/12)")  # fmt: skip
    # the run-length check: fixed anchors plateau, the dynamic one keeps going
    hn = "heavy_noise-medium"
    longer = summary("bandits_rounds200")["winmass"][hn]
    wm = s["winmass"][hn]
    assert longer["ADPO-softmax/dynamic"]["mean"] > wm["ADPO-softmax/dynamic"]["mean"]
    quoted("bandits", f"leaves fixed ADPO-softmax at {longer['ADPO-softmax/fixed']['mean']:.2f} and fixed OPO at "
           f"{longer['OPO/fixed']['mean']:.2f} on heavy_noise-medium, and lifts dynamic ADPO-softmax from "
           f"{wm['ADPO-softmax/dynamic']['mean']:.2f} to {longer['ADPO-softmax/dynamic']['mean']:.2f}")  # fmt: skip
    t = s["timing"]
    quoted("bandits", f"**{t['wall_s']:,.0f} s wall, {t['cpu_s']:.0f} s CPU**")
    shifts = [g["dist_shift-high"] for g in s["anchors_gain_pct_by_scenario"].values()]
    quoted("bandits", f"(dynamic −{-max(shifts):.0f} % to −{-min(shifts):.0f} %)")


# --------------------------------------------------------------------------- offline listwise


def test_offline_listwise_page():
    s = summary("offline_listwise")["variants"]
    rows = runs("offline_listwise")
    assert all(r["top1_accuracy_after"] > r["top1_accuracy_before"] for r in rows)  # every seed
    after = [m["top1_accuracy_after"]["mean"] for m in s.values()]
    ndcg = [m["ndcg_after"]["mean"] for m in s.values()]
    per = {}  # the policy's own log-prob top-1, after minus before on the same seed
    for v in s:
        mine = [r for r in rows if r["variant"] == v]
        pairs = [
            {"when": "after", "seed": r["seed"], "x": r["logp_top1_accuracy_after"]} for r in mine
        ]
        pairs += [
            {"when": "before", "seed": r["seed"], "x": r["logp_top1_accuracy_before"]} for r in mine
        ]
        per[v] = paired_differences(pairs, ("x",), base="before", by="when", pair="seed")["after"][
            "x"
        ]
    assert all(v["mean"] - v["ci95"] < 0 < v["mean"] + v["ci95"] for v in per.values())
    means = [v["mean"] for v in per.values()]
    moved = f"{num(min(means), 3, True)} to {num(max(means), 3, True)}"
    for name in ("offline-listwise", "index", "README"):
        quoted(name, f"0.31 → {span(after, 2)}", moved)
    quoted("offline-listwise", f"NDCG from 0.77 to {span(ndcg, 2)}",
           f"softmax {interval(per['softmax / fixed'])}", f"{interval(per['softmax / ema'])} with the EMA",
           f"{interval(per['softmax / dynamic'])} with the dynamic")  # fmt: skip
    for v, m in s.items():
        before, after_ = (f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in
                          ("top1_accuracy_before", "top1_accuracy_after"))  # fmt: skip
        quoted("offline-listwise", f"| {v} | {before} | **{after_}** |")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["bandits"]:
        print("\n\n".join(bandits_tables(summary("bandits"))))


def test_reasoning_long_adaptive_tau_page():
    """The adaptive-τ arm's reading: paired differences against GRPO and against ADPO at the
    constant τ, with intervals and seed counts, and the τ it ran at."""
    folder = "reasoning_long_adaptive_tau"
    rows, d = _long(folder)
    metrics = ("accuracy_final", "reward_peak", "reward_final", "entropy_late")
    own = [r for r in rows if r["loss"] in ("adpo", "adpo-adaptive-tau")]
    c = paired_differences(own, metrics, base="adpo", by="loss", pair="seed")["adpo-adaptive-tau"]
    a = d["adpo-adaptive-tau"]
    n = len({r["seed"] for r in rows})
    s = summary(folder)
    assert s["paired_vs_objective"]["long"]["adpo-adaptive-tau"]["n_seeds"] == n
    tau = [r["tau_mean"] for r in rows if r["loss"] == "adpo-adaptive-tau"]
    assert all(r["tau_mean"] == pytest.approx(0.8, rel=1e-6) for r in rows if r["loss"] == "adpo")
    tau_steps = [r["tau"] for r in read_csv(RESULTS / folder / "curves.csv")
                 if r["loss"] == "adpo-adaptive-tau" and isinstance(r.get("tau"), float)]  # fmt: skip
    per = s["per_objective"]["long"]
    quoted("reasoning-long",
           f"On {n} paired seeds the adaptive arm minus ADPO at τ 0.8",
           f"within {span(tau_steps, 2)} (",
           *(f"| `{x}`{' (τ 0.8)' if x == 'adpo' else ''} | {per[x]['accuracy_final']['mean']:.3f} "
             f"± {per[x]['accuracy_final']['std']:.3f} |" for x in per),
           f"peak reward is {interval(a['reward_peak'])} from GRPO's",
           f"(ADPO at τ 0.8: {interval(d['adpo']['accuracy_final'])})",
           f"(at τ 0.8: {interval(d['adpo']['reward_final'])})",
           f"mean τ {span(tau, 2)}",
           f"final tier-3 accuracy {interval(a['accuracy_final'])} against GRPO",
           f"{interval(c['accuracy_final'])} against ADPO at τ 0.8",
           f"final reward {interval(a['reward_final'])} against GRPO",
           f"{interval(c['reward_final'])} against ADPO at τ 0.8",
           f"peak reward {interval(c['reward_peak'])}",
           f"late entropy {interval(c['entropy_late'], 4)}")  # fmt: skip
    assert not any(r["collapsed"] for r in rows)
    quoted("README", f"keeps τ within {span(tau_steps, 2)}", f"**inconclusive**, {n} paired seeds")
    quoted("index", f"ADPO at τ 0.8 does ({n} paired seeds)")
