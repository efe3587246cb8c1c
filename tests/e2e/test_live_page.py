"""The live page of `gclo run --api` in a real headless browser (Debian's Chromium, driven by Playwright; no
browser is downloaded): nodes appear as the graph grows and change colour as they run, a click opens a
computation's details, and a graph beyond what can be drawn is shown grouped by handler type. Screenshots are
kept in test-artifacts/."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from . import test_api
from .test_api import TOKEN

service = test_api.service  # the fixture: gclo run --api on a local directory, stopped and checked after

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium reaches for Google's services at every start, which a closed network refuses.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE_FILL = "#90d58f"


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail("the page tests need Debian's chromium (make setup installs it: apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def test_the_page_shows_the_graph_growing_and_changing_colour_and_a_click_opens_the_details(service, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{service.url}/?token={TOKEN}")  # the token goes into a cookie; the address loses it
    assert page.url.rstrip("/") == service.url
    page.wait_for_selector("#connection[data-state=live]", timeout=20_000)
    # When a chain is submitted whose input is not there yet, its nodes appear, waiting
    with service.client() as api:
        # (the reader first: the page places each node right of what it reads, whatever order they come in)
        chain = ("computation: copy-again\nhandler_type: echo\ninputs: [copy.txt]\noutput: copy2.txt\n---\n"
                 "computation: copy\nhandler_type: echo\ninputs: [in.txt]\noutput: copy.txt\n---\n"
                 "computation: broken\nhandler_type: chatty\ninputs: [copy.txt]\noutput: chatty.txt\n"
                 "retry: {max_attempts: 1}\n")
        assert api.post("/v1/specs", content=chain).status_code == 202
    page.wait_for_selector('g.node[data-computation="copy-again"][data-state="waiting"]', timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "live-page-waiting.png"))

    def x_of(name):
        return float(page.get_attribute(f'g.node[data-computation="{name}"] rect', "x"))
    assert x_of("copy-again") > x_of("copy")
    # When the input arrives, they run and turn green (and the failing one red)
    (service.root / "in.txt").write_text("hello")
    page.wait_for_selector('g.node[data-computation="copy-again"][data-state="done"]', timeout=30_000)
    page.wait_for_selector('g.node[data-computation="broken"][data-state="failed"]', timeout=30_000)
    fill = page.get_attribute('g.node[data-computation="copy-again"] rect', "fill")
    assert fill == DONE_FILL
    assert page.locator("#counts span[data-state=done]").inner_text() == "done 2"
    # A click opens the details: state, spec, error and log tail
    page.click('g.node[data-computation="broken"]')
    page.wait_for_selector("#d-state[data-state=failed]", timeout=10_000)
    assert page.inner_text("#d-name") == "broken"
    assert "the first attempt always fails" in page.inner_text("#d-error")
    assert '"handler_type": "chatty"' in page.inner_text("#d-spec")
    assert page.is_disabled("#d-cancel") and not page.is_disabled("#d-rerun")  # failed: nothing to stop
    page.wait_for_function("document.getElementById('d-log').textContent.includes('printed by broken')",
                           timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "live-page-details.png"))
    # Loaded afresh (the graph read whole, in registration order), the reader is still right of what it reads
    page.reload()
    page.wait_for_selector('g.node[data-computation="copy-again"][data-state="done"]', timeout=20_000)
    assert x_of("copy-again") > x_of("copy")


def test_a_graph_too_large_to_draw_is_grouped_by_handler_type(service, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{service.url}/?token={TOKEN}")
    page.wait_for_selector("#connection[data-state=live]", timeout=20_000)
    (service.root / "numbers.txt").write_text(" ".join(str(i) for i in range(1, 2001)))
    with service.client() as api:
        fan = "computation: split\nhandler_type: split\ninputs: [numbers.txt]\noutput: numbers.json\n"
        assert api.post("/v1/specs", content=fan).status_code == 202
    page.wait_for_selector('g.group[data-handler-type="double"]', timeout=60_000)
    page.wait_for_function("document.getElementById('graph-note').textContent.includes('2002 computations')",
                           timeout=60_000)
    assert page.locator("g.node").count() == 0  # nothing drawn one by one
    page.click('g.group[data-handler-type="double"]')
    page.wait_for_function("document.getElementById('d-meta').textContent.includes('2000 computations')",
                           timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-grouped.png"))
