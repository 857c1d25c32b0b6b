"""Open the built site in a real headless browser: navigation works, pages look right.

    mkdocs build --strict && python docs/_tools/browser_check.py site [--screenshots docs/screenshots]

Serves ``site/`` on 127.0.0.1 (a free port), drives Debian's Chromium (``apt-get install
chromium``; ``/usr/bin/chromium`` or ``$CHROMIUM``) through the ``playwright`` package's
driver (``pip install playwright``; no browser is downloaded), and checks, as a reader
would:

1. the home page loads with the site name and version in the header, the navigation tabs
   (Home, Guides, Reproducing the papers, API reference, Project) and no console error;
2. clicking the "Guides" tab, then the "From GRPO to ADPO/OPO in TRL" sidebar entry, lands
   on that guide; following its link to the API reference lands on a generated page;
3. the API page of ``adpo.losses`` shows ``adpo_loss`` with its signature and a
   cross-reference that, clicked, scrolls to ``LossOutput``;
4. the bandits results page shows its heat-map (the image is decoded, not broken);
5. the search box finds ``plackett_luce``;
6. no JavaScript error and no resource of the site fails to load (requests to other hosts,
   such as GitHub's API for the repository badge, are reported, not failed: CI is offline).

Screenshots of the home page, an API page and a results page go to ``--screenshots``.
Exit status 1 with the failed checks listed if any fails.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from pathlib import Path


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _chromium() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not path:
        raise SystemExit(
            "browser_check: no chromium found (apt-get install -y chromium, or set CHROMIUM)"
        )
    return path


def run(site: Path, shots: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    shots.mkdir(parents=True, exist_ok=True)
    server, root = _serve(site)
    errors: list[str] = []  # JavaScript errors, and local resources that failed to load
    external: set[str] = set()  # hosts outside the site (GitHub's API for the repo badge)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))

            def failed(request) -> None:
                if request.url.startswith(root):
                    errors.append(f"{request.url}: {request.failure}")
                else:
                    external.add(request.url.split("/")[2])

            page.on("requestfailed", failed)

            # 1. home
            page.goto(root, wait_until="networkidle")
            header = page.locator(".md-header__topic").first.inner_text()
            check(
                re.search(r"adpo \d+\.\d+\.\d+", header) is not None,
                f"header shows the version ({header.strip()!r})",
            )
            tabs = [t.strip() for t in page.locator(".md-tabs__link").all_inner_texts()]
            want = ["Home", "Guides", "Reproducing the papers", "API reference", "Project"]
            check(tabs == want, f"navigation tabs {tabs}")
            check(
                page.locator("article h1").first.inner_text().strip().rstrip("¶") == "adpo",
                "home page title",
            )
            page.screenshot(path=str(shots / "home.png"))

            # 2. navigate by clicking, as a reader would
            page.locator(".md-tabs__link", has_text="Guides").click()
            page.wait_for_load_state("networkidle")
            check("/guides/" in page.url, f"Guides tab opens a guide ({page.url})")
            page.locator(
                ".md-sidebar--primary .md-nav__link", has_text="From GRPO to ADPO/OPO in TRL"
            ).first.click()
            page.wait_for_load_state("networkidle")
            h1 = page.locator("article h1").first.inner_text().strip()
            check(
                page.url.endswith("/guides/grpo-to-adpo/") and h1.startswith("From GRPO"),
                f"sidebar link lands on the guide ({h1!r})",
            )
            page.locator("article a[href*='reference/trainers/']").first.click()
            page.wait_for_load_state("networkidle")
            check(
                "/reference/trainers/" in page.url
                and page.locator("[id='adpo.trainers.presets.loss_config']").count() == 1,
                f"guide's cross-reference lands on the generated API page ({page.url})",
            )

            # 3. the API page of adpo.losses
            page.goto(root + "reference/losses/", wait_until="networkidle")
            heading = page.locator("[id='adpo.losses.adpo_loss']")
            check(heading.count() == 1, "adpo.losses.adpo_loss has an entry")
            sig = page.locator(".doc-signature").all_inner_texts()
            check(any("adpo_loss(" in s and "tau" in s for s in sig), "its signature is rendered")
            # its heading just below the sticky header
            heading.evaluate(
                "el => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 70)"
            )
            page.wait_for_timeout(800)  # the header's title transition
            page.screenshot(path=str(shots / "api-losses.png"))
            link = page.locator("a.autorefs-internal[href$='#adpo.losses.LossOutput']").first
            check(link.count() == 1, "a docstring cross-reference to LossOutput exists")
            if link.count():
                link.click()
                page.wait_for_timeout(300)
                check(
                    page.url.endswith("#adpo.losses.LossOutput"), "clicking it jumps to LossOutput"
                )

            # 4. a results page with its plot
            page.goto(root + "reproducing/bandits/", wait_until="networkidle")
            img = page.locator("img[src$='winmass_heatmap.png']").first
            img.scroll_into_view_if_needed()
            page.evaluate("window.scrollBy(0, -90)")
            page.wait_for_timeout(800)
            width = page.evaluate("(el) => el.naturalWidth", img.element_handle())
            check(width > 100, f"bandits heat-map is shown ({width} px wide)")
            page.screenshot(path=str(shots / "results-bandits.png"))

            # 5. search
            page.goto(root, wait_until="networkidle")
            page.locator(".md-search__input").click()
            page.keyboard.type("plackett_luce", delay=20)
            page.wait_for_selector(".md-search-result__item", timeout=15_000)
            hits = page.locator(".md-search-result__item").count()
            check(hits > 0, f"search finds plackett_luce ({hits} results)")

            check(not errors, f"no JavaScript errors, no local resource failed {errors[:3]}")
            if external:
                print(
                    f"note  offline: requests to {sorted(external)} failed (not part of the site)"
                )
            browser.close()
    finally:
        server.shutdown()
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("site", nargs="?", default="site", type=Path)
    ap.add_argument("--screenshots", default=Path("docs/screenshots"), type=Path)
    args = ap.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(
            f"browser_check: {args.site} has no index.html; run `mkdocs build --strict` first",
            file=sys.stderr,
        )
        return 1
    failures = run(args.site, args.screenshots)
    print(
        f"browser_check: {len(failures)} failed"
        + (f": {failures}" if failures else ", screenshots in " + str(args.screenshots))
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
