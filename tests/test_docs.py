"""The documentation cannot rot: its examples run, its pages and links exist, its version is the package's.

* Every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` runs, as written,
  on the tiny model. What the harness changes so that a block written for a GPU and a hub
  model runs here in seconds is listed in ``HUB_MODELS``, ``DATA_FILES`` and
  ``_ci_sized`` below, and in ``docs/development/docs.md``. A block that cannot run here
  says so on the line before it, ``<!-- docs-test: skip (the reason) -->``, and is skipped
  with that reason; ``MAX_SKIPPED`` keeps that set small.
* The site's structure: every page is in the navigation, every public module has an API
  reference page, every plot under ``results/`` is shown on a page, every relative link in
  the Markdown resolves, the README stays a landing page.
* With the ``docs`` extra installed, the site builds with ``mkdocs build --strict`` and
  every internal link of the built HTML resolves (``docs/_tools/check_site.py``, which
  ``.ci/run`` also runs on the site it builds).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._public import declared_all, imported_from, public_modules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# The committed benchmark results: in a git checkout, not in the sdist (pyproject.toml says why).
RESULTS = ROOT / "results"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_tools" not in p.parts)

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
MAX_SKIPPED = 3

# Hub ids the examples name, replaced by a tiny Qwen3 saved on disk (no download).
HUB_MODELS = ("Qwen/Qwen3-1.7B", "Qwen/Qwen3-0.6B")
# Data files the examples read, written into the example's working directory.
DATA_FILES = {
    "math.jsonl": [
        {
            "prompt": f"What is {a}+{b}? Put the answer in \\boxed{{}}.",
            "solution": f"\\boxed{{{a + b}}}",
        }
        for a, b in [(2, 3), (4, 5), (1, 1), (7, 2)]
    ],
}


def _blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason)`` for each python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") not in ("python", "py"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        indent = m.group("indent")
        code = "\n".join(
            x[len(indent) :] if x.startswith(indent) else x for x in m.group("code").split("\n")
        )
        out.append((line, code, skip.group("reason").strip() if skip else None))
    return out


BLOCKS = [
    pytest.param(path, line, code, reason, id=f"{path.relative_to(ROOT)}:{line}")
    for path in [README, *PAGES]
    for line, code, reason in _blocks(path)
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen3 and its character tokenizer saved like a hub checkpoint."""
    pytest.importorskip("transformers")
    from adpo.testing import char_tokenizer, tiny_qwen3

    path = tmp_path_factory.mktemp("tiny-qwen3")
    tok = char_tokenizer()
    tiny_qwen3(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _ci_sized(monkeypatch) -> None:
    """Every trainer config an example builds runs 1 optimizer step on the CPU, in float32,
    with at most 16 generated tokens and no logging integrations."""
    import transformers

    original = transformers.TrainingArguments.__post_init__

    def post_init(self):
        self.use_cpu, self.bf16, self.fp16 = True, False, False
        self.max_steps = 1
        self.report_to = "none"
        if getattr(self, "max_completion_length", None):
            self.max_completion_length = min(self.max_completion_length, 16)
        original(self)

    monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", post_init)


def test_docs_have_examples():
    readme = [b for b in BLOCKS if b.values[0] == README]
    assert readme, "README.md has no python example"
    assert len(BLOCKS) >= 10, f"only {len(BLOCKS)} python examples in README.md and docs/"


def test_few_examples_are_skipped():
    skipped = [(b.id, b.values[3]) for b in BLOCKS if b.values[3]]
    assert len(skipped) <= MAX_SKIPPED, f"too many examples skipped: {skipped}"


@pytest.mark.parametrize(("path", "line", "code", "reason"), BLOCKS)
def test_example_runs(path, line, code, reason, tmp_path, monkeypatch, request):
    if reason:
        pytest.skip(reason)
    if any(model in code for model in HUB_MODELS):
        model_dir = request.getfixturevalue("tiny_model_dir")
        for model in HUB_MODELS:
            code = code.replace(f'"{model}"', repr(str(model_dir)))
    if importlib.util.find_spec("transformers") is not None:
        _ci_sized(monkeypatch)
    monkeypatch.chdir(tmp_path)  # examples write runs/… and read data files from here
    for name, rows in DATA_FILES.items():
        if name in code:
            (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = "\n" * (line) + code  # tracebacks point at the Markdown line
    exec(compile(source, str(path), "exec"), {"__name__": f"docs_example_{line}"})


# --------------------------------------------------------------------------- structure


def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"([\w/.-]+\.md)\s*$", nav, flags=re.M)


def test_every_page_is_in_the_navigation():
    nav = _nav_pages()
    pages = sorted(p.relative_to(DOCS).as_posix() for p in PAGES)
    assert sorted(nav) == pages, {
        "missing from nav": sorted(set(pages) - set(nav)),
        "in nav, no file": sorted(set(nav) - set(pages)),
    }


def _reference_entries() -> dict[str, bool]:
    """``{identifier: renders its members}`` for every ``::: identifier`` of ``docs/reference``."""
    path = DOCS / "_tools" / "reference_entries.py"
    spec = importlib.util.spec_from_file_location("reference_entries", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.rendered_roots(DOCS / "reference"))


def test_every_public_module_has_a_reference_entry():
    """Each public module has its own ``:::`` entry, unless every name of its ``__all__`` is
    documented where users import it: a module rendered with its members exports the same
    object (traced through the ``from … import`` lines): ``adpo.losses.opo``'s names through
    ``adpo.losses``, the deprecated ``adpo.trainers.ranking``'s through ``adpo.metrics``."""
    entries = _reference_entries()
    modules = public_modules()
    stale = sorted(set(entries) - set(modules))
    assert not stale, f"reference entries for modules that do not exist: {stale}"
    imports = {m: imported_from(p) for m, p in modules.items()}
    exports = {m: set(declared_all(p) or ()) for m, p in modules.items()}

    def origin(module: str, name: str) -> str:
        """The module that defines ``module.name``."""
        while (source := imports[module].get(name)) in modules:
            module = source
        return module

    shown = {(n, origin(e, n)) for e, members in entries.items() if members for n in exports[e]}
    missing = [
        m
        for m in modules
        if m != "adpo"  # the package root: the docs' home page
        and m not in entries
        and not (exports[m] and all((n, origin(m, n)) in shown for n in exports[m]))
    ]
    assert not missing, f"public modules with no API reference entry: {missing}"


def test_every_result_plot_is_shown_in_the_docs():
    shown = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    plots = sorted(p.relative_to(ROOT).as_posix() for p in RESULTS.rglob("*.png"))
    missing = [p for p in plots if p not in shown]
    assert not missing, f"plots under results/ that no docs page shows: {missing}"


LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+?)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        resolved = (page.parent / target).resolve()
        in_results = resolved.is_relative_to(DOCS / "results")
        if in_results:  # the docs hook copies results/ into the site at docs/results/
            if not RESULTS.is_dir():
                continue  # an unpacked sdist, which leaves results/ out
            resolved = ROOT / resolved.relative_to(DOCS)
        if not resolved.exists():
            broken.append(target)
    assert not broken, broken


def test_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    command = 'pip install -c constraints-cpu.txt -e ".[test]" && pytest'
    assert command in text
    ci = ROOT / ".ci" / "run"  # in a checkout; the sdist leaves .ci/ out
    if ci.is_file():
        assert command in ci.read_text(encoding="utf-8"), "README and .ci/run share the command"
    assert 'pip install -c constraints-cpu.txt -e ".[rl]" && adpo demo' in text
    for page in ("guides/grpo-to-adpo.md", "reproducing/index.md", "reference/index.md"):
        assert page in text, f"README does not link docs/{page}"


# --------------------------------------------------------------------------- version


def test_one_version_for_package_docs_and_changelog():
    import adpo

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_tools" / "hooks.py")
    if importlib.util.find_spec("mkdocs") is None:
        text = (DOCS / "_tools" / "hooks.py").read_text(encoding="utf-8")
        assert "__version__" in text
    else:
        hooks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hooks)
        assert hooks.package_version() == adpo.__version__
    assert importlib.metadata.version("adpo") == adpo.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[?v?(\d+\.\d+\.\d+[^\]\s]*)\]?", changelog, flags=re.M)
    assert first and first.group(1) == adpo.__version__, (
        "CHANGELOG.md's newest entry is not __version__"
    )


# --------------------------------------------------------------------------- the built site


def _check_site_module():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "_tools" / "check_site.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_check_site_finds_broken_links(tmp_path):
    check = _check_site_module()
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text(
        '<nav><a href="a/">A</a><a href="missing/">M</a></nav><img src="p.png"><a href="#top">t</a>'
    )
    (tmp_path / "a" / "index.html").write_text(
        '<h1 id="x">A</h1><a href="../#nope">back</a><a href="#x">x</a>'
    )
    problems, counts = check.check_site(tmp_path)
    assert counts["nav_links"] == 2
    assert len(problems) == 4, problems  # missing/, p.png, #top, ../#nope
    assert any("missing" in p for p in problems) and any("'nope'" in p for p in problems)


def test_site_builds_strictly_and_its_links_resolve(tmp_path):
    if (
        importlib.util.find_spec("mkdocs") is None
        or importlib.util.find_spec("mkdocstrings") is None
    ):
        pytest.skip('the docs extra is not installed (pip install -e ".[docs]")')
    if not RESULTS.is_dir():
        pytest.skip("no results/ (an unpacked sdist): the pages link the committed results")
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    problems, counts = _check_site_module().check_site(site)
    assert not problems, problems[:20]
    assert counts["nav_links"] > 100
    html = (site / "reference" / "losses" / "index.html").read_text(encoding="utf-8")
    assert 'id="adpo.losses.adpo_loss"' in html  # the API reference is generated
    assert (site / "results" / "bandits" / "winmass_heatmap.png").is_file()
    assert importlib.import_module("adpo").__version__ in (site / "index.html").read_text(
        encoding="utf-8"
    )


def test_block_extraction_reads_skip_markers_and_indented_fences(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n"
        "<!-- docs-test: skip (needs a CUDA GPU) -->\n```python\nimport cuda_only\n```\n\n"
        "* a list item:\n\n  ```python\n  y = 2\n  ```\n\n```bash\nnot python\n```\n"
    )
    blocks = _blocks(page)
    assert [(code.strip(), reason) for _, code, reason in blocks] == [
        ("x = 1", None),
        ("import cuda_only", "needs a CUDA GPU"),
        ("y = 2", None),
    ]
    assert [line for line, _, _ in blocks] == [3, 8, 14]
