"""adpo's package metadata states what the code needs, and nothing about our machines.

Each check reads the metadata twice: from ``pyproject.toml`` (the source) and from the
installed distribution (``importlib.metadata``: the wheel's ``METADATA`` where adpo was
installed from the built wheel, as ``.ci/release`` does; hatchling's editable metadata in
a checkout). That pip really resolves these requirements beside a GPU user's stack (vLLM,
a newer torch) is ``.ci/resolve.py``'s job: it reads the package index, which tests may not.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints-cpu.txt"
PYTHONS = [Version(f"3.{minor}") for minor in range(8, 20)]


@dataclass
class Metadata:
    requires_python: SpecifierSet
    requires: list[Requirement]  # Requires-Dist: an extra's carry the marker `extra == "…"`
    extras: list[str]
    classifiers: list[str]
    license: str | None
    license_text: str | None


def from_pyproject() -> Metadata:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requires = [Requirement(r) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        for r in reqs:
            base, _, marker = r.partition(";")
            marker = f'extra == "{extra}"' + (f" and ({marker.strip()})" if marker.strip() else "")
            requires.append(Requirement(f"{base.strip()}; {marker}"))
    (license_file,) = project["license-files"]
    return Metadata(
        requires_python=SpecifierSet(project["requires-python"]),
        requires=requires,
        extras=list(project["optional-dependencies"]),
        classifiers=project["classifiers"],
        license=project["license"],
        license_text=(ROOT / license_file).read_text(encoding="utf-8"),
    )


def from_installed() -> Metadata:
    dist = importlib.metadata.distribution("adpo")
    meta = dist.metadata
    return Metadata(
        requires_python=SpecifierSet(meta["Requires-Python"]),
        requires=[Requirement(r) for r in meta.get_all("Requires-Dist") or []],
        extras=meta.get_all("Provides-Extra") or [],
        classifiers=meta.get_all("Classifier") or [],
        license=meta["License-Expression"],
        license_text=dist.read_text("licenses/LICENSE"),
    )


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _sources():
    out = []
    if PYPROJECT.is_file():
        out.append(pytest.param(from_pyproject, id="pyproject.toml"))
    if _installed("adpo"):
        out.append(pytest.param(from_installed, id="installed"))
    return out


SOURCES = _sources()


def requirements(meta: Metadata, extra: str | None = None) -> list[Requirement]:
    """What ``pip install "adpo[extra]"`` asks for: the base requirements, the extra's, and
    those of the extras it names (``adpo[hf]`` inside ``rl``)."""
    extras, todo, out = set(), [extra] if extra else [], []
    while todo:
        e = todo.pop()
        if e not in extras:
            extras.add(e)
            todo += [
                x
                for r in meta.requires
                if canonicalize_name(r.name) == "adpo" and r.marker.evaluate({"extra": e})
                for x in r.extras
            ]
    for r in meta.requires:
        if canonicalize_name(r.name) == "adpo":
            continue
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras):
            out.append(r)
    return out


def specifier(meta: Metadata, name: str, extra: str | None = None) -> SpecifierSet:
    """The versions of ``name`` that ``adpo[extra]`` admits (every requirement on it, joined)."""
    spec = SpecifierSet()
    for r in requirements(meta, extra):
        if canonicalize_name(r.name) == canonicalize_name(name):
            spec &= r.specifier
    return spec


def lowest_python(spec: SpecifierSet) -> Version:
    return next(v for v in PYTHONS if v in spec)


@pytest.mark.parametrize("source", SOURCES)
def test_torch_has_a_floor_and_no_upper_bound_in_any_extra(source):
    """vLLM 0.33 pins torch 2.14.0 and torch 2.15.0 is the newest release: a GPU user's
    torch must stay theirs. The CPU pin lives in constraints-cpu.txt, not here."""
    meta = source()
    assert set(meta.extras) >= {"hf", "rl", "mujoco", "verl", "docs", "test"}
    for extra in [None, *meta.extras]:
        spec = specifier(meta, "torch", extra)
        for v in ("2.13.0", "2.14.0", "2.14.1", "2.15.0", "3.0.0"):
            assert Version(v) in spec, f"adpo[{extra}] refuses torch {v}: {spec}"
        assert all(s.operator in (">=", ">") for s in spec), f"adpo[{extra}] caps torch: {spec}"
    assert Version("2.3.1") not in specifier(meta, "torch")  # the floor is stated: 2.4


@pytest.mark.parametrize("source", SOURCES)
def test_rl_pins_trl_to_the_minor_version_the_seam_was_tested_with(source):
    pytest.importorskip("trl")
    from adpo._compat.trl import TESTED_TRL

    spec = specifier(source(), "trl", "rl")  # with the looser range of `hf`, which rl includes
    assert {s.operator for s in spec} == {">=", "<"}, spec
    low = max(Version(s.version) for s in spec if s.operator == ">=")
    high = min(Version(s.version) for s in spec if s.operator == "<")
    assert (low, high) == TESTED_TRL, f"adpo[rl] admits trl {spec}, the seam tested {TESTED_TRL}"


@pytest.mark.parametrize("source", SOURCES)
def test_vllm_is_left_to_trl_and_verl(source):
    meta = source()
    assert not [r for r in meta.requires if canonicalize_name(r.name) == "vllm"]


@pytest.mark.parametrize("source", SOURCES)
def test_requires_python_is_what_the_rl_extra_needs(source):
    """The lowest Python adpo admits is one every installed dependency of ``adpo[rl]``
    admits, and the one below it is refused by at least one (TRL 1.16: 3.11)."""
    meta = source()
    floor = lowest_python(meta.requires_python)
    below = Version(f"{floor.major}.{floor.minor - 1}")
    refused_below = []
    for r in requirements(meta, "rl"):
        try:
            needs = importlib.metadata.metadata(r.name)["Requires-Python"]
        except importlib.metadata.PackageNotFoundError:
            continue
        if needs:
            assert floor in SpecifierSet(needs), f"{r.name} needs Python {needs}; adpo says {floor}"
            if below not in SpecifierSet(needs):
                refused_below.append(r.name)
    if "trl" in [r.name for r in requirements(meta, "rl")] and _installed("trl"):
        assert "trl" in refused_below, "the floor is higher than the rl extra needs"


@pytest.mark.parametrize("source", SOURCES)
def test_classifiers_name_the_python_floor_and_the_license_file_is_apache_2(source):
    meta = source()
    floor = lowest_python(meta.requires_python)
    versions = [
        Version(c.rsplit("::", 1)[1].strip())
        for c in meta.classifiers
        if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert floor in versions and min(versions) == floor
    assert meta.license == "Apache-2.0"
    assert meta.license_text is not None
    head = " ".join(meta.license_text.split()[:4])
    assert head == "Apache License Version 2.0,", head


def test_the_cpu_constraints_pin_a_torch_adpo_admits():
    if not (CONSTRAINTS.is_file() and PYPROJECT.is_file()):
        pytest.skip("not a checkout or an sdist")
    lines = [
        line.strip()
        for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    (torch,) = [Requirement(line) for line in lines]
    assert torch.name == "torch"
    (pin,) = torch.specifier
    assert pin.operator == "=="
    assert Version(pin.version) in specifier(from_pyproject(), "torch")
