"""What a release's two files hold: the sdist a packager builds and tests from, the wheel.

    python .ci/check_dist.py DIST_DIR

* The sdist holds every file git tracks under ``src/``, ``tests/``, ``docs/``,
  ``examples/`` and ``benchmarks/``, the README, CHANGELOG, LICENSE, the CPU constraints
  file and ``mkdocs.yml``; not ``results/`` (the committed benchmark results) nor ``.ci/``.
* The wheel holds the package (every tracked file under ``src/adpo/``), the license file,
  the ``adpo`` command and nothing else; its version is ``__version__``.

Run from the checkout the release was built from (it reads ``git ls-files``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDIST_DIRS = ("src/", "tests/", "docs/", "examples/", "benchmarks/")
SDIST_FILES = {"pyproject.toml", "PKG-INFO", "README.md", "CHANGELOG.md", "LICENSE"}
SDIST_FILES |= {"constraints-cpu.txt", "mkdocs.yml"}
NOT_IN_SDIST = ("results/", ".ci/", ".venv")


def version() -> str:
    text = (ROOT / "src" / "adpo" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def tracked(*prefixes: str) -> set[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    return {p for p in out.stdout.splitlines() if p.startswith(prefixes)}


def check_sdist(path: Path, v: str) -> list[str]:
    with tarfile.open(path) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    problems = [f"sdist lacks {p}" for p in sorted((SDIST_FILES | tracked(*SDIST_DIRS)) - names)]
    problems += [f"sdist holds {p}" for p in sorted(names) if p.startswith(NOT_IN_SDIST)]
    size = path.stat().st_size / 1e6
    print(f"sdist {path.name}: {len(names)} files, {size:.2f} MB")
    return problems


def check_wheel(path: Path, v: str) -> list[str]:
    info = f"adpo-{v}.dist-info/"
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        meta = Parser().parsestr(z.read(info + "METADATA").decode())
        entry_points = z.read(info + "entry_points.txt").decode()
    package = {p.removeprefix("src/") for p in tracked("src/adpo/")}
    problems = [f"wheel lacks {p}" for p in sorted(package - names)]
    extra = names - package - {info + f for f in ("METADATA", "WHEEL", "RECORD")}
    extra -= {info + "licenses/LICENSE", info + "entry_points.txt"}
    problems += [f"wheel holds {p}" for p in sorted(extra)]
    if info + "licenses/LICENSE" not in names:
        problems.append("wheel lacks its license file")
    if meta["Version"] != v:
        problems.append(f"wheel METADATA version {meta['Version']} != __version__ {v}")
    if "adpo = adpo.cli:main" not in entry_points:
        problems.append("wheel has no `adpo` command")
    print(f"wheel {path.name}: {len(names)} files, {path.stat().st_size / 1e6:.2f} MB")
    return problems


def main() -> int:
    dist = Path(sys.argv[1])
    v = version()
    problems = check_sdist(dist / f"adpo-{v}.tar.gz", v)
    problems += check_wheel(dist / f"adpo-{v}-py3-none-any.whl", v)
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
