"""The UI in a real browser: chromium (Debian's, driven by Playwright) against `bitfab serve`
subprocesses on loopback ports, over the demo's store and a hostile one.

Skipped when chromium is not installed (``apt-get install chromium``, or run ``scripts/test``,
which installs it). Every page load also checks that the page raised no script error and that
the Content-Security-Policy blocked nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import XSS, Server

from bitfab.store import SQLiteStore
from bitfab.store.keys import new_api_key

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH: apt-get install chromium (or run scripts/test)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def demo_server(demo_db: Path) -> Iterator[Server]:
    server = Server(demo_db, "--no-auth")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hostile_server(hostile_db: tuple[Path, dict[str, str]]) -> Iterator[Server]:
    server = Server(hostile_db[0], "--no-auth")
    yield server
    server.stop()


class Problems:
    """Script errors, console errors (CSP violations among them) and dialogs of one page."""

    def __init__(self, page: Any) -> None:
        self.items: list[str] = []
        page.on("pageerror", lambda error: self.items.append(f"pageerror: {error}"))

        def console(message: Any) -> None:
            # A 4xx page (the login form refusing a key) is logged too: that's not a problem.
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                self.items.append(f"console: {message.text}")

        page.on("console", console)

        def dialog(d: Any) -> None:
            self.items.append(f"dialog: {d.message}")
            d.dismiss()

        page.on("dialog", dialog)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    problems = Problems(opened)
    yield opened
    context.close()
    assert problems.items == []


def visible(locator: Any) -> int:
    return int(
        locator.evaluate_all(
            "nodes => nodes.filter(n => n.offsetParent !== null || n.getClientRects().length).length"
        )
    )


def test_functions_to_traces_to_a_trace(page: Any, demo_server: Server) -> None:
    """Click through functions -> triage's traces -> a trace; fold and unfold the tree; select a
    span and read its output; move with the keyboard."""
    page.goto(demo_server.url + "/")
    page.get_by_role("link", name="triage", exact=True).click()
    page.wait_for_url("**/traces?key=triage")
    assert page.locator("table.traces-table tbody tr").count() == 36
    page.locator("a.rowlink").first.click()
    page.wait_for_url("**/traces/*")
    detail = page.locator("#detail .span-detail")
    detail.wait_for()
    assert detail.locator("h2").inner_text() == "triage"

    rows = page.locator(".span-row")
    assert rows.count() == 3 and visible(rows) == 3
    rows.first.locator(".toggle").click()
    assert rows.first.get_attribute("aria-expanded") == "false"
    assert visible(rows) == 1
    rows.first.locator(".toggle").click()
    assert visible(rows) == 3

    page.locator(".span-row", has_text="classify").click()
    expect(page.locator("#detail h2")).to_have_text("classify")
    output = page.locator("#detail [data-section='output']")
    assert "label" in output.inner_text() and "fake-gpt-mini" in output.inner_text()
    assert "fake-gpt-mini" in page.locator("#detail [data-section='usage'] table").inner_text()
    assert "span=" in page.url

    page.keyboard.press("ArrowDown")
    expect(page.locator("#detail h2")).to_have_text("lookup_customer")
    assert (
        page.locator(".span-row[aria-selected='true']").inner_text().count("lookup_customer") == 1
    )

    page.get_by_role("button", name="Collapse all").click()
    assert visible(rows) == 1
    page.get_by_role("button", name="Expand all").click()
    assert visible(rows) == 3


def test_an_error_span_shows_its_traceback(page: Any, demo_server: Server) -> None:
    """Errors only -> a failed trace: the failing span says KeyError, the traceback unfolds."""
    page.goto(demo_server.url + "/traces?key=triage&errors=1")
    page.locator("a.rowlink").first.click()
    page.locator(".span-row.has-error", has_text="lookup_customer").click()
    expect(page.locator("#detail h2")).to_have_text("lookup_customer")
    assert "KeyError: 'wayne-enterprises'" in page.locator("#detail .errorbox").inner_text()
    page.locator("#detail .traceback summary").click()
    assert "lookup_customer" in page.locator("#detail .tb").inner_text()


def test_test_run_filter_and_diff_highlight(page: Any, demo_server: Server) -> None:
    """Runs -> the run; filter by verdict (only those items show, the URL says so); a changed
    item highlights its differing paths in both outputs."""
    page.goto(demo_server.url + "/runs")
    page.locator("a.rowlink").first.click()
    page.wait_for_url("**/runs/*")
    items = page.locator("details.item")
    assert items.count() == 36 and visible(items) == 36

    page.locator(".filter-chips .chip", has_text="changed").click()
    assert visible(items) == 8
    assert visible(page.locator("details.item[data-verdict='changed']")) == 8
    assert "verdict=changed" in page.url

    changed = page.locator("details.item[data-verdict='changed']").first
    old = changed.locator(".side.old .jv-hl-changed")
    new = changed.locator(".side.new .jv-hl-changed")
    assert old.count() >= 1 and new.count() >= 1
    assert "priority" in old.first.inner_text() and "priority" in new.first.inner_text()
    assert old.first.inner_text() != new.first.inner_text()
    added = page.locator("details.item[data-verdict='changed'] .side.new .jv-hl-added")
    assert added.count() >= 1 and "open-invoices" in added.first.inner_text()
    assert page.locator("details.item[data-verdict='changed'] .side.old .jv-hl-added").count() == 0

    page.locator(".filter-chips .chip", has_text="all").click()
    assert visible(items) == 36 and "verdict" not in page.url

    page.goto(page.url + "?verdict=fixed")
    assert visible(items) == 2
    fixed = page.locator("details.item[data-verdict='fixed']").first
    assert "wayne-enterprises" in fixed.locator(".side.old .errorbox").inner_text()
    page.locator(".filter-chips .chip", has_text="same").click()
    assert visible(items) == 26


def test_login_flow(page: Any, tmp_path: Path, demo_db: Path) -> None:
    """With auth on: a page sends the browser to the login form; a wrong key is refused; the
    right one lands on the page asked for; logging out goes back to the form."""
    db = tmp_path / "auth.db"
    shutil.copyfile(demo_db, db)
    with SQLiteStore(db) as store:
        key, secret = new_api_key(name="browser", scope="read")
        store.create_api_key(key)
    server = Server(db)
    try:
        page.goto(server.url + "/runs")
        page.wait_for_url("**/login?next=%2Fruns")
        page.fill("#key", "bfk_wrong")
        page.get_by_role("button", name="Log in").click()
        assert "Unknown, revoked or mistyped key" in page.locator(".alert").inner_text()
        page.fill("#key", secret)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(server.url + "/runs")
        assert page.locator("h1").inner_text() == "Test runs"
        cookie = next(c for c in page.context.cookies() if c["name"] == "bitfab_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.locator(
            "a.rowlink"
        ).first.click()  # the run page's script fetches nothing; a trace's does
        page.locator("details.item .links a", has_text="original").first.click()
        page.locator("#detail .span-detail").wait_for()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/login")
        page.goto(server.url + "/")
        page.wait_for_url("**/login?next=%2F")
    finally:
        server.stop()


def test_hostile_data_stays_text(page: Any, hostile_server: Server) -> None:
    """Markup recorded in names, inputs, outputs and errors shows as text and runs nothing;
    a 1 MB string is clipped with a way to see more."""
    page.goto(hostile_server.url + "/traces/x-trace")
    page.locator("#detail .span-detail").wait_for()
    assert page.locator("#detail h2").inner_text() == XSS
    assert page.locator(".span-row .label").first.inner_text() == XSS
    output = page.locator("#detail [data-section='output']")
    more = output.locator(".jv-more")
    assert "more characters" in more.inner_text()
    before = len(output.inner_text())
    more.click()
    assert len(output.inner_text()) > before + 50_000
    page.locator(".span-row.has-error").click()
    page.locator("#detail .errorbox").wait_for()
    assert XSS in page.locator("#detail .errorbox").inner_text()

    page.goto(hostile_server.url + "/runs/" + "run-%3Cb%3Ebold%3C%2Fb%3E")
    assert page.locator("h1").inner_text().startswith(XSS)
    item = page.locator("details.item").first
    assert XSS in item.locator(".side.old").inner_text()
    assert item.locator(".side.new .jv-hl-changed").count() == 1


def test_a_trace_of_5000_spans(page: Any, hostile_server: Server) -> None:
    """5,000 rows render; fold all, unfold all; select a span 100 levels deep."""
    page.goto(hostile_server.url + "/traces/big-trace")
    page.locator("#detail .span-detail").wait_for()
    rows = page.locator(".span-row")
    assert rows.count() == 5000
    page.get_by_role("button", name="Collapse all").click()
    assert visible(rows) == 1
    page.get_by_role("button", name="Expand all").click()
    assert visible(rows) == 5000
    deep = page.locator(".span-row[data-depth='100']")
    deep.scroll_into_view_if_needed()
    deep.click()
    expect(page.locator("#detail .span-detail")).to_have_attribute("data-span", "big-100")


def test_serve_prints_the_address_of_the_ui(demo_server: Server) -> None:
    """`bitfab serve` says where the UI is."""
    assert f"web UI at {demo_server.url}/" in "".join(demo_server.lines)
