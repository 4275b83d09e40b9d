"""The page of pbn serve in a real browser: the system's headless Chromium, driven by Playwright.

.ci/run installs Debian's chromium when it is missing; outside CI, without a
Chromium, these tests are skipped (set PBN_CHROMIUM to a browser to run them).
"""

from __future__ import annotations

import os
import shutil

import pytest

from serving import Served, cli_json, outside_painting, painting_files

CHROMIUM = os.environ.get("PBN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="no Chromium here (CI installs Debian's chromium)")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "CI must have a Chromium: .ci/run installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_compare_search_and_runs_in_a_browser(browser, tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    s = Served(ws)
    try:
        a, b = painting_files(ws)[0], painting_files(ws)[-1]
        cli = cli_json(ws, "compare", a, b)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(s.url)
        page.wait_for_function("document.getElementById('model').textContent.startsWith('run r')")

        def compare(first, second):
            page.set_input_files("#file-a", str(first))
            page.set_input_files("#file-b", str(second))
            page.click("#compare-go")
            page.wait_for_function("!document.getElementById('compare-go').disabled")

        compare(a, b)
        page.wait_for_selector("#compare-result", state="visible")
        assert page.inner_text("#verdict") == ("Same artist" if cli["same_artist"] else "Different artists")
        assert page.inner_text("#probability") == f"{cli['same_artist_probability']:.2f}"
        assert page.inner_text("#distance") == f"{cli['distance']:.3f}"
        assert page.locator("#views img").count() == 2 and page.locator("#compare-neighbours figure").count() == 10
        # every picture arrives (views, thumbnails, the histogram) and this pair's mark sits on the histogram
        page.wait_for_function("[...document.images].filter(i => i.offsetParent).every(i => i.complete && i.naturalWidth > 0)")
        mark, plot = page.locator("#mark").bounding_box(), page.locator("#histogram").bounding_box()
        assert plot["x"] < mark["x"] < plot["x"] + plot["width"] and mark["height"] > plot["height"] / 2

        notes = tmp_path / "notes.jpg"
        notes.write_text("a shopping list, not a painting\n" * 10)
        compare(notes, b)
        assert page.inner_text("#compare-error").startswith("cannot read notes.jpg")
        assert page.locator("#compare-result").is_hidden()

        compare(a, b)  # the server and the page go on after the bad file
        page.wait_for_selector("#compare-result", state="visible")
        assert page.inner_text("#compare-error") == ""
        assert page.inner_text("#distance") == f"{cli['distance']:.3f}"

        query = outside_painting(ws, tmp_path)
        page.click("nav button[data-view=search]")
        page.set_input_files("#file-q", str(query))
        page.fill("#k", "6")
        page.click("#search-go")
        page.wait_for_selector("#search-result", state="visible")
        expected = cli_json(ws, "search", query, "-k", 6)
        shown = [page.inner_text(f"#neighbour-table tr:nth-child({i + 2}) td:nth-child(2)") for i in range(6)]
        assert shown == [str(n["image_id"]) for n in expected["neighbours"]]

        # the evidence arrives after the verdict, drawn for the pair on the page
        page.click("nav button[data-view=compare]")
        page.wait_for_selector("#compare-evidence", state="visible")
        page.wait_for_function("document.getElementById('compare-evidence').naturalWidth > 600")
        page.wait_for_selector("#compare-details .detail")  # the matched details, each pair enlarged on a click
        page.click("#compare-details .detail")
        page.wait_for_selector("#detail-dialog[open] #detail-big img")
        page.click("#detail-dialog button")

        page.click("nav button[data-view=attribute]")
        page.set_input_files("#file-h", str(query))
        page.fill("#hands-k", "3")
        page.click("#attribute-go")
        page.wait_for_selector("#attribute-result", state="visible")
        cli_hands = cli_json(ws, "attribute", query, "-k", 3)["paintings"][0]
        assert page.inner_text("#answer").startswith("Unknown hand" if cli_hands["unknown_hand"] else cli_hands["answer"])
        shown = [page.inner_text(f"#hands tr:nth-child({i + 2}) td:nth-child(2)") for i in range(3)]
        assert shown == [h["artist"] for h in cli_hands["hands"]]
        page.wait_for_function("document.getElementById('attribute-evidence').naturalWidth > 600")
        page.wait_for_function("[...document.querySelectorAll('#hands img')].every(i => i.complete && i.naturalWidth > 0)")

        page.click("nav button[data-view=runs]")
        page.wait_for_selector("#run-table tr:nth-child(2)")
        assert page.inner_text("#run-table tr:nth-child(2) td:nth-child(1)") == "r (serving)"
        page.click("#run-table button:text('test')")
        page.wait_for_selector("#report table")
        assert "triplet accuracy" in page.inner_text("#report")
        page.wait_for_function("[...document.querySelectorAll('#report img')].every(i => i.complete && i.naturalWidth > 0)")
    finally:
        s.close()
