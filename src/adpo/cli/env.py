"""``adpo env``: what to paste into a bug report (like ``trl env``).

adpo's version and git commit come from :func:`adpo._io.code_version` and the libraries'
versions from :func:`adpo._io.library_versions`, the functions every benchmark summary's
``environment`` records, so a report and a result name the same code the same way.
"""

from __future__ import annotations

import platform
import sys

__all__ = ["LIBRARIES", "environment_report", "main"]

#: the distributions adpo drives, in the order the report lists them
LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "huggingface_hub",
    "math-verify",
    "vllm",
    "verl",
    "tyro",
)


def _devices() -> str:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"cuda: {', '.join(names)} (CUDA {torch.version.cuda})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu: " + ", ".join(xpu.get_device_name(i) for i in range(xpu.device_count()))
    return f"cpu ({torch.get_num_threads()} threads)"


def environment_report() -> dict[str, str]:
    """``{name: value}``: adpo, its commit, Python, the platform, the device, each library."""
    from adpo._io import code_version, library_versions

    code = code_version()
    if code["commit"] is None:
        commit = "none (an installed package, not a git checkout)"
    else:
        commit = code["commit"] + (
            " (dirty: tracked files differ from it)" if code["dirty"] else ""
        )
    return {
        "adpo": code["adpo"],
        "adpo commit": commit,
        "Python": platform.python_version(),
        "platform": platform.platform(),
        "device": _devices(),
        **library_versions(LIBRARIES),
    }


def main(argv: list[str] | None = None) -> int:
    """Print :func:`environment_report`, one ``- name: value`` line each."""
    from adpo.cli._args import ArgumentParser

    parser = ArgumentParser(
        prog="adpo env",
        description="Print the versions of adpo and the libraries it drives, Python, the "
        "platform and the device, to paste into a bug report.",
    )
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    lines = [f"- {k}: {v}" for k, v in environment_report().items()]
    print("Copy-paste the following when reporting an issue:\n\n" + "\n".join(lines))
    return 0
