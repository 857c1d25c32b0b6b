"""adpo's wheel resolves beside a GPU user's stack: pip dry runs against the package index.

    python .ci/resolve.py dist/adpo-X.Y.Z-py3-none-any.whl [--out DIR]

Each case asks pip what ``pip install`` would pick (``--dry-run --ignore-installed
--report``: metadata only, nothing is installed, the running environment is not read) and
checks the report: the versions the user asked for are the ones picked, so adpo neither
downgrades the user's torch nor refuses a vLLM. Run with a pip that has no CPU constraints
file (machine-wide constraints, such as a cap at the newest torch a machine holds, still
apply). The cases run in parallel; each one's wall time is printed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


@dataclass
class Report:
    picked: dict[str, Version]  # canonical name → version pip would install
    requires: dict[str, list[Requirement]]  # canonical name → its Requires-Dist
    urls: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> Report:
        report = cls({}, {}, {})
        for item in json.loads(path.read_text())["install"]:
            meta = item["metadata"]
            name = canonicalize_name(meta["name"])
            report.picked[name] = Version(meta["version"])
            report.requires[name] = [Requirement(r) for r in meta.get("requires_dist") or []]
            report.urls[name] = item["download_info"]["url"]
        return report

    def pins(self, package: str, extra: str | None = None) -> dict[str, Version]:
        """``{name: version}`` of the ``==`` requirements of ``package`` (in ``extra``)."""
        out = {}
        for r in self.requires[package]:
            applies = r.marker is None or r.marker.evaluate({"extra": extra or ""})
            eq = [s for s in r.specifier if s.operator == "=="]
            if applies and eq:
                out[canonicalize_name(r.name)] = Version(eq[0].version)
        return out

    def extra_requirement(self, package: str, name: str, extra: str) -> Requirement:
        (req,) = [
            r
            for r in self.requires[package]
            if canonicalize_name(r.name) == name
            and r.marker is not None
            and r.marker.evaluate({"extra": extra})
        ]
        return req


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def vllm_033(r: Report) -> str:
    """vLLM 0.33 pins torch 2.14.0: adpo[rl] must take vLLM's torch, not cap it."""
    expect(r.picked["vllm"] == Version("0.33.0"), f"vllm {r.picked['vllm']}")
    torch = r.pins("vllm")["torch"]
    expect(r.picked["torch"] == torch, f"torch {r.picked['torch']}, vLLM 0.33.0 pins {torch}")
    return f"vllm {r.picked['vllm']}, torch {r.picked['torch']}, trl {r.picked['trl']}"


def torch_2141(r: Report) -> str:
    expect(r.picked["torch"] == Version("2.14.1"), f"torch {r.picked['torch']}")
    return f"torch {r.picked['torch']}, trl {r.picked['trl']}"


def trl_vllm(r: Report) -> str:
    """The vLLM TRL's own `vllm` extra admits, whichever pip picks within it."""
    req = r.extra_requirement("trl", "vllm", "vllm")
    expect(r.picked["vllm"] in req.specifier, f"vllm {r.picked['vllm']} outside trl's {req}")
    torch = r.pins("vllm")["torch"]  # a local CPU wheel of that version counts (2.13.0+cpu)
    expect(Version(r.picked["torch"].public) == torch, f"torch {r.picked['torch']} != {torch}")
    return f"vllm {r.picked['vllm']} (trl[vllm]: {req.specifier}), torch {r.picked['torch']}"


def verl_vllm(r: Report) -> str:
    """verl 0.9.1's own `vllm` stack: every version it pins is the one picked."""
    pins = r.pins("verl", "vllm")
    expect(r.picked["verl"] == Version("0.9.1"), f"verl {r.picked['verl']}")
    for name in ("torch", "vllm", "transformers"):
        expect(
            r.picked[name] == pins[name], f"{name} {r.picked[name]}, verl[vllm] pins {pins[name]}"
        )
    return ", ".join(f"{n} {r.picked[n]}" for n in ("verl", "vllm", "torch", "transformers"))


# name → (what to install beside the wheel's extra, the extra, the check)
CASES = {
    "rl+vllm==0.33.0": (["vllm==0.33.0"], "rl", vllm_033),
    "rl+torch==2.14.1": (["torch==2.14.1"], "rl", torch_2141),
    "rl+trl[vllm]": (["trl[vllm]"], "rl", trl_vllm),
    "verl+verl[vllm]==0.9.1": (["verl[vllm]==0.9.1"], "verl", verl_vllm),
}


def start(name: str, wheel: Path, out: Path) -> subprocess.Popen:
    extra_reqs, extra, _ = CASES[name]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(out / f"{name}.json"), f"{wheel}[{extra}]", *extra_reqs]
    with (out / f"{name}.log").open("w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def outcome(name: str, rc: int, wheel: Path, out: Path) -> str:
    """What a case found: "ok: " and the versions picked, or what went wrong."""
    if rc != 0:
        log = (out / f"{name}.log").read_text().splitlines()
        tail = [x for x in log if "is ignored" not in x][-15:]
        return f"pip exited with {rc}:\n    " + "\n    ".join(tail)
    r = Report.read(out / f"{name}.json")
    try:
        expect(r.urls["adpo"].endswith(wheel.name), f"adpo from {r.urls['adpo']}")
        return "ok: " + CASES[name][2](r)
    except (AssertionError, KeyError) as e:
        return f"wrong pick: {e!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--out", type=Path, help="keep the reports and pip logs here")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds, for all the cases")
    args = ap.parse_args()
    wheel = args.wheel.resolve()
    out = args.out or Path(tempfile.mkdtemp(prefix="adpo-resolve-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    running = {name: start(name, wheel, out) for name in CASES}
    # stopped (CI gave up, Ctrl-C): stop the dry runs too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = 0
    try:
        while running:  # report each case when it ends, with its own wall time
            time.sleep(1)
            seconds = time.perf_counter() - t0
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    result = outcome(name, proc.returncode, wheel, out)
                elif seconds > args.timeout:
                    proc.kill()
                    result = f"timed out after {args.timeout:.0f} s"
                else:
                    continue
                del running[name]
                print(f"resolve {name:<24} {seconds:4.0f} s  {result}", flush=True)
                failed += not result.startswith("ok")
    finally:
        for proc in running.values():
            proc.kill()
    print(
        f"resolve: {len(CASES) - failed}/{len(CASES)} as expected in "
        f"{time.perf_counter() - t0:.0f} s (reports in {out})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
