"""MkDocs hooks: the package's version in the site, and the committed results in the build.

* **Version.** ``src/adpo/__init__.py``'s ``__version__`` is the one source: hatchling
  reads it for the package metadata (``pyproject.toml``, ``[tool.hatch.version]``) and this
  hook reads the same line for the site (no import, so building the docs never imports
  torch). It becomes ``config.extra.version`` (shown in the header) and replaces
  ``{{ adpo_version }}`` in pages.
* **Changelog.** The page ``changelog.md`` shows ``CHANGELOG.md`` from the repository root.
* **Results.** The benchmarks write their tables and plots under ``results/`` (outside
  ``docs/``, where the commands put them and the tests read them). Every file there,
  except model weights, is added to the build at the same path, so a page links
  ``../results/bandits/winmass_heatmap.png`` and ``mkdocs build --strict`` checks the link
  like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULT_SUFFIXES = {".png", ".svg", ".csv", ".json"}  # not .pt weights, not .md pages


def package_version() -> str:
    text = (ROOT / "src" / "adpo" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if m is None:
        raise RuntimeError("src/adpo/__init__.py has no __version__ line")
    return m.group(1)


def on_config(config, **kwargs):
    version = package_version()
    config.extra["version"] = version
    config.site_name = f"adpo {version}"
    return config


def on_files(files: Files, config, **kwargs) -> Files:
    results = ROOT / "results"
    for path in sorted(results.rglob("*")):
        if path.is_file() and path.suffix in RESULT_SUFFIXES:
            rel = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, rel, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri == "changelog.md":  # the page is CHANGELOG.md, kept at the root
        markdown = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return markdown.replace("{{ adpo_version }}", config.extra["version"])
