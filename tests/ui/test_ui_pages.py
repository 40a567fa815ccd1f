"""The UI's pages served in-process: every page on the demo's data, 404s, bad parameters,
security headers, and hostile recordings that must come out escaped, clipped and fast."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from ui_helpers import HOSTILE_KEY, HOSTILE_RUN, HUGE, XSS, Client

from bitfab.store import SQLiteStore
from bitfab.store.base import TestRun, TestRunItem

HTML = {"Accept": "text/html"}
DATA_BLOCK = re.compile(r'<script type="application/json" class="item-data">(.*?)</script>', re.S)


def demo_ids(db: Path) -> dict[str, Any]:
    with SQLiteStore(db) as store:
        run = store.list_test_runs()[0]
        full = store.get_test_run(run.id)
        assert full is not None
        changed = next(i for i in full.items if i.verdict == "changed")
        error = store.traces("triage", errors_only=True)[0]
        root = store.traces("triage", limit=1)[0]
        spans = store.trace_spans(root.trace_id)
    return {
        "run": run.id,
        "changed": changed,
        "error_trace": error.trace_id,
        "trace": root.trace_id,
        "child": next(s["id"] for s in spans if s["traceFunctionKey"] == "classify"),
    }


def rows_of(page: str) -> int:
    return page.count('class="rowlink')


def test_every_page_answers_200_on_the_demo(demo: Client, demo_db: Path) -> None:
    """Functions, traces (all, of a key, by alias), a trace, test runs and a run all render."""
    ids = demo_ids(demo_db)
    pages = [
        "/",
        "/functions",
        "/traces",
        "/traces?key=triage",
        "/functions/triage",
        f"/traces/{ids['trace']}",
        f"/traces/{ids['error_trace']}",
        f"/traces/{ids['changed'].replay_trace_id}",
        "/runs",
        "/runs?key=triage",
        f"/runs/{ids['run']}",
        f"/runs/{ids['run']}?verdict=changed",
        "/login",  # without auth: back to the functions
    ]
    for path in pages:
        answer = demo.get(path, follow_redirects=True)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/html"), path


def test_functions_page_lists_every_key_with_its_stats(demo: Client) -> None:
    """Each traced key links to its traces; triage shows its calls, errors and latest run."""
    page = demo.get("/").text
    for key in ("triage", "classify", "lookup_customer"):
        assert f'href="/traces?key={key}"' in page
    assert "108 recorded calls" in page
    assert "5.6%" in page  # 2 errors in 36 calls
    assert "changed <b>8</b>" in page and "fixed <b>2</b>" in page  # the latest test run


def test_traces_page_pages_newest_first_with_the_store_cursor(demo: Client) -> None:
    """limit=10 gives ten traces and an "Older" link; following the links visits all 36 once."""
    seen: list[str] = []
    path: str | None = "/traces?key=triage&limit=10"
    while path is not None:
        page = demo.get(path).text
        seen += re.findall(r'class="rowlink mono" href="/traces/([^"?]+)"', page)
        older = re.search(r'rel="next" href="([^"]+)"', page)
        path = older.group(1).replace("&amp;", "&") if older else None
    assert len(seen) == 36 and len(set(seen)) == 36
    starts = re.findall(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", demo.get("/traces?key=triage").text
    )
    assert starts == sorted(starts, reverse=True)


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("errors=1", 2),
        ("search=wayne", 2),
        ("search=WAYNE-enterprises", 2),
        ("search=no-such-text", 0),
        ("since=1h", 36),
        ("since=2999-01-01T00:00:00Z", 0),
        ("before=2000-01-01T00:00:00Z", 0),
        ("replays=1", 72),
    ],
)
def test_traces_filters(demo: Client, query: str, count: int) -> None:
    """Errors only, search in inputs, since/before and replays filter the list."""
    page = demo.get(f"/traces?key=triage&limit=200&{query}").text
    assert rows_of(page) == count


def test_trace_page_shows_the_tree_with_a_timeline(demo: Client, demo_db: Path) -> None:
    """Three spans, the root first, children indented, bars placed inside 0-100%."""
    ids = demo_ids(demo_db)
    page = demo.get(f"/traces/{ids['trace']}").text
    rows = re.findall(r'role="treeitem".*?data-id="([^"]+)" data-depth="(\d+)"', page)
    assert [depth for _, depth in rows] == ["0", "1", "1"]
    assert rows[0][0] == ids["trace"]
    for x, width in re.findall(r'<rect x="([\d.]+)%" y="1" width="([\d.]+)%"', page):
        assert (
            0 <= float(x) <= 100 and 0 < float(width) <= 100 and float(x) + float(width) <= 100.01
        )
    assert 'data-span="' + ids["trace"] + '"' in page  # the root selected
    selected = demo.get(f"/traces/{ids['trace']}?span={ids['child']}").text
    assert f'data-span="{ids["child"]}"' in selected


def test_replay_trace_links_its_run_and_its_original(demo: Client, demo_db: Path) -> None:
    """A trace recorded by a test run says so and links both."""
    ids = demo_ids(demo_db)
    item = ids["changed"]
    page = demo.get(f"/traces/{item.replay_trace_id}").text
    assert f'href="/runs/{ids["run"]}"' in page
    assert f'href="/traces/{item.original_trace_id}?span={item.original_span_id}"' in page


def test_span_detail_json(demo: Client, demo_db: Path) -> None:
    """/ui/span gives the detail pane its data: an error with traceback, usage, mocks."""
    ids = demo_ids(demo_db)
    with SQLiteStore(demo_db) as store:
        error_spans = store.trace_spans(ids["error_trace"])
        replay_spans = store.trace_spans(ids["changed"].replay_trace_id or "")
    failing = next(s for s in error_spans if s["traceFunctionKey"] == "lookup_customer")
    detail = demo.get("/ui/span", params={"id": failing["id"]}).json()
    assert detail["error"]["type"] == "KeyError"
    assert "lookup_customer" in detail["error"]["traceback"]
    assert detail["has_output"] is False

    llm = demo.get("/ui/span", params={"id": ids["child"]}).json()
    assert llm["usage"][0]["model"] == "fake-gpt-mini" and llm["usage"][0]["input_tokens"] > 0
    assert llm["output"]["label"] in ("incident", "billing", "account", "question")

    mocked = next(s for s in replay_spans if s.get("mocked"))
    detail = demo.get("/ui/span", params={"id": mocked["id"]}).json()
    assert detail["mocked"] == {"source": "recorded", "target": "output"}
    assert detail["test_run_id"] == ids["run"]
    assert detail["source_span_id"]


def test_span_link_redirects_to_its_trace(demo: Client, demo_db: Path) -> None:
    """/spans/ID opens the span's trace with that span selected."""
    ids = demo_ids(demo_db)
    answer = demo.get(f"/spans/{ids['child']}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/traces/{ids['trace']}?span={ids['child']}"


def test_run_page_summary_items_and_links(demo: Client, demo_db: Path) -> None:
    """Chips per verdict, latency and tokens old -> new, 36 items linking both traces."""
    ids = demo_ids(demo_db)
    page = demo.get(f"/runs/{ids['run']}").text
    for chip in ("all <b>36</b>", "same <b>26</b>", "changed <b>8</b>", "fixed <b>2</b>"):
        assert chip in page
    assert "1,752 → 0" in page
    # the LLM step was mocked: the page says why the replay spent no tokens
    assert "spend no tokens in a replay" in page
    assert page.count('<details class="item') == 36
    item = ids["changed"]
    assert f'href="/traces/{item.original_trace_id}"' in page
    assert f'href="/traces/{item.replay_trace_id}"' in page
    blocks = [json.loads(block) for block in DATA_BLOCK.findall(page)]
    changed = [b for b in blocks if b["highlights"]]
    assert len(changed) == 8
    assert {"path": ["priority"], "kind": "changed"} in changed[0]["highlights"]


def test_run_page_verdict_query_hides_the_others(demo: Client, demo_db: Path) -> None:
    """?verdict=changed renders every item but hides all but the 8 changed ones."""
    ids = demo_ids(demo_db)
    page = demo.get(f"/runs/{ids['run']}?verdict=changed").text
    items = re.findall(r'<details class="item[^>]*>', page)
    visible = [tag for tag in items if " hidden" not in tag]
    assert len(items) == 36 and len(visible) == 8
    assert all('data-verdict="changed"' in tag for tag in visible)
    both = demo.get(f"/runs/{ids['run']}?verdict=changed,fixed").text
    assert (
        len([t for t in re.findall(r'<details class="item[^>]*>', both) if " hidden" not in t])
        == 10
    )


@pytest.mark.parametrize(
    "path",
    ["/traces/no-such-trace", "/runs/no-such-run", "/spans/no-such-span", "/no/such/page"],
)
def test_unknown_ids_are_404_pages(demo: Client, path: str) -> None:
    """A friendly HTML 404 for people; the API keeps its JSON 404."""
    answer = demo.get(path, headers=HTML)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "Not found" in answer.text
    api = demo.get("/api/v1/no-such-endpoint", headers=HTML)
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    span = demo.get("/ui/span", params={"id": "nope"})
    assert span.status_code == 404 and span.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/traces?limit=0",
        "/traces?limit=abc",
        "/traces?limit=100000",
        "/traces?errors=maybe",
        "/traces?since=yesterday",
        "/traces?before=not-a-time",
        "/traces?before_us=12x",
        "/traces?search=" + "x" * 1001,
        "/traces?key=" + "k" * 5000,
        "/functions/" + "k" * 5000,
        "/runs?limit=-1",
        "/runs/whatever?verdict=<b>",
        "/runs/whatever?page=0",
        "/ui/span",
    ],
)
def test_bad_query_parameters_are_4xx_not_500(demo: Client, path: str) -> None:
    """Every malformed parameter is refused with a 4xx that names it."""
    answer = demo.get(path, headers=HTML)
    assert 400 <= answer.status_code < 500, (path, answer.status_code)


def test_pages_carry_a_strict_content_security_policy(demo: Client, demo_db: Path) -> None:
    """No inline script anywhere: scripts only from /static, data only in JSON blocks."""
    ids = demo_ids(demo_db)
    for path in ("/", f"/traces/{ids['trace']}", f"/runs/{ids['run']}", "/traces/nope"):
        answer = demo.get(path)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        for tag in re.findall(r"<script[^>]*>", answer.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag


def test_static_files_are_served(demo: Client) -> None:
    """The script, style sheet and icon ship in the package and are served at /static."""
    page = demo.get("/").text
    for name, kind in (
        ("bitfab.js", "javascript"),
        ("bitfab.css", "text/css"),
        ("favicon.svg", "svg"),
    ):
        href = re.search(rf'"(/static/{re.escape(name)}\?v=[0-9a-f]+)"', page)
        assert href, name
        answer = demo.get(href.group(1))
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "immutable" in answer.headers["cache-control"]
    script = demo.get("/static/bitfab.js").text
    assert not re.search(
        r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write|\beval\(|new Function", script
    )


def test_without_the_ui_the_api_still_answers(
    demo_db: Path, make_client: Callable[..., Client]
) -> None:
    """create_app(ui=False) serves no page and no static file."""
    client = make_client(demo_db, ui=False)
    assert client.get("/").status_code == 404
    assert client.get("/static/bitfab.js").status_code == 404
    assert client.get("/api/v1/functions").status_code == 200


# ---- hostile recordings ------------------------------------------------------------------


@pytest.fixture
def hostile(hostile_db: tuple[Path, dict[str, str]], make_client: Callable[..., Client]) -> Client:
    return make_client(hostile_db[0])


def assert_inert(page: str) -> None:
    """Nothing recorded became markup: no script, image or bold tag from the data."""
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "<b>bold</b>" not in page
    for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S):
        assert "<" not in block and ">" not in block


def test_hostile_text_is_escaped_on_every_page(hostile: Client) -> None:
    """Markup in keys, names, inputs, outputs, errors and run names comes out as text."""
    pages = [
        "/",
        "/traces",
        "/traces?key=" + quote(HOSTILE_KEY),
        "/traces/x-trace",
        "/runs",
        "/runs/" + quote(HOSTILE_RUN),
        "/runs/" + quote(HOSTILE_RUN) + "?verdict=error",
    ]
    for path in pages:
        answer = hostile.get(path)
        assert answer.status_code == 200, path
        assert_inert(answer.text)
    assert "&lt;script&gt;alert(&#34;key&#34;)&lt;/script&gt;" in hostile.get("/").text
    span = hostile.get("/ui/span", params={"id": "x-child"})
    assert span.json()["error"]["message"] == XSS  # JSON, read by textContent in the page


def test_huge_and_deep_values_are_clipped(hostile: Client) -> None:
    """A 1 MB string and 300 levels of nesting: the run page stays small and says what it cut."""
    page = hostile.get("/runs/" + quote(HOSTILE_RUN)).text
    assert len(page) < 300_000
    assert "THE-END" not in page
    assert "more characters" in page
    assert "nested deeper than the page shows" in page
    detail = hostile.get("/ui/span", params={"id": "x-root"}).json()
    assert len(json.dumps(detail)) < 400_000
    assert "THE-END" not in json.dumps(detail) and len(HUGE) > 900_000
    deep = hostile.get("/ui/span", params={"id": "deep-root"}).json()
    assert "nested deeper than the page shows" in json.dumps(deep)


def test_a_trace_of_5000_spans_renders(hostile: Client) -> None:
    """Every span of a 5,000-span trace is a row, in tree order, indentation capped."""
    page = hostile.get("/traces/big-trace").text
    rows = re.findall(r'data-id="big-(\d+)" data-depth="(\d+)"', page)
    assert len(rows) == 5000
    assert rows[0] == ("0", "0")
    assert max(int(depth) for _, depth in rows) == 100
    assert 'class="name d16"' in page and 'class="name d17"' not in page


def test_loops_and_orphans_still_show(hostile: Client) -> None:
    """Spans whose parents loop or never arrived are shown at the top level."""
    page = hostile.get("/traces/loop-trace").text
    ids = re.findall(r'data-id="([^"]+)" data-depth="0"', page)
    assert sorted(ids) == ["loop-a", "orphan"] or sorted(ids) == ["loop-b", "orphan"]
    assert len(re.findall(r'role="treeitem"', page)) == 3


# ---- runs of other shapes ----------------------------------------------------------------


def test_a_running_run_without_summary_or_items(
    tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    """A run that has only started: listed and shown, no counts, no items."""
    db = tmp_path / "running.db"
    with SQLiteStore(db) as store:
        store.create_test_run(TestRun(id="r1", key="k", created_at="2026-11-27T10:00:00Z"))
    client = make_client(db)
    assert ">running<" in client.get("/runs").text
    page = client.get("/runs/r1")
    assert page.status_code == 200 and ">running<" in page.text
    assert "This run has no items" in page.text


def test_a_large_run_pages_and_filters_on_the_server(
    tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    """Above 200 items: 200 per page, ?verdict= filters before paging, chips are plain links."""
    db = tmp_path / "large.db"
    verdicts = ["same"] * 400 + ["changed"] * 50
    with SQLiteStore(db) as store:
        store.create_test_run(TestRun(id="big", key="k", created_at="2026-11-27T10:00:00Z"))
        store.complete_test_run(
            "big",
            items=[
                TestRunItem(idx=n, verdict=v, item={"verdict": v, "input": n})
                for n, v in enumerate(verdicts)
            ],
            summary={"total": 450, "counts": {"same": 400, "changed": 50}},
        )
    client = make_client(db)
    first = client.get("/runs/big").text
    assert 'data-client-filter="0"' in first
    assert first.count('<details class="item') == 200 and "page 1 of 3" in first
    last = client.get("/runs/big?page=3").text
    assert last.count('<details class="item') == 50
    assert client.get("/runs/big?page=99").status_code == 200  # the last page
    changed = client.get("/runs/big?verdict=changed").text
    items = re.findall(r'<details class="item[^>]*>', changed)
    assert len(items) == 50 and all(
        'data-verdict="changed"' in t and " hidden" not in t for t in items
    )


def test_a_trace_known_only_by_its_completion_record(
    tmp_path: Path, make_client: Callable[..., Client]
) -> None:
    """Spans not arrived yet: the page says so instead of waiting for a span."""
    db = tmp_path / "completion.db"
    with SQLiteStore(db) as store:
        store.write([], [{"id": "t1", "traceFunctionKey": "k", "expectedSpanCount": 3}])
    page = make_client(db).get("/traces/t1")
    assert page.status_code == 200
    assert "No span of this trace has arrived" in page.text and 'role="treeitem"' not in page.text
