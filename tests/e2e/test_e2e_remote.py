"""Remote mode with real processes only: `bitfab serve`, an app recording to it, a second
process replaying against it (the way a user runs bitfab with a server)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import ServerProcess, create_key, integrity, run_script, span_ids

from bitfab.store import SQLiteStore

CALLS = 20
TRIAGE_KEY = "e2e.triage"
LLM_KEY = "e2e.fake_llm"

# The app: a triage function taking a dataclass, with a nested fake LLM that reports usage and
# is served from the recording during a replay. TRIAGE_RULE=v2 flips one rule.
APP = '''
"""A small app traced with bitfab (written by tests/e2e/test_e2e_remote.py)."""
from __future__ import annotations

import dataclasses
import os

import bitfab

LLM_CALLS = {"n": 0}


@dataclasses.dataclass
class Ticket:
    id: int
    subject: str
    body: str
    tier: str


@dataclasses.dataclass
class Verdict:
    ticket: int
    queue: str
    priority: str


@bitfab.trace(key="e2e.fake_llm", span_type="llm", mock_on_replay=True)
def fake_llm(prompt: str) -> dict:
    LLM_CALLS["n"] += 1
    billing = "refund" in prompt or "invoice" in prompt
    return {
        "model": "fake-llm-1",
        "label": "billing" if billing else "general",
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 2},
    }


@bitfab.trace(key="e2e.triage")
def triage(ticket: Ticket) -> Verdict:
    answer = fake_llm(f"{ticket.subject}: {ticket.body}")
    priority = "high" if ticket.tier == "gold" else "normal"
    if os.environ.get("TRIAGE_RULE") == "v2" and answer["label"] == "billing":
        priority = "urgent"
    return Verdict(ticket=ticket.id, queue=answer["label"], priority=priority)


def ticket(i: int) -> Ticket:
    subject = "refund please" if i % 3 == 0 else "login problem"
    return Ticket(id=i, subject=subject, body=f"ticket number {i}", tier="gold" if i % 4 == 0 else "basic")
'''

# Prints the stats once bitfab's own atexit hook has flushed (atexit runs hooks last-in
# first-out, and this one is registered before bitfab's exporter starts).
REPORT_AT_EXIT = """
import atexit, json, sys

def report_at_exit():
    stats = bitfab.stats()
    print(json.dumps({"stats": {"emitted": stats.emitted, "exported": stats.exported,
                                "queued": stats.queued, "in_flight": stats.in_flight,
                                "dropped": stats.dropped}}), flush=True)

import bitfab
atexit.register(report_at_exit)
"""

RECORD = (
    REPORT_AT_EXIT
    + f"""
import dataclasses
from triage_app import LLM_CALLS, ticket, triage

results = [dataclasses.asdict(triage(ticket(i))) for i in range({CALLS})]
print(json.dumps({{"results": results, "llm_calls": LLM_CALLS["n"]}}), flush=True)
if "--flush" in sys.argv:
    bitfab.flush(timeout=15)
    print(json.dumps({{"after_flush": True}}), flush=True)
"""
)

REPLAY = (
    REPORT_AT_EXIT
    + f"""
from triage_app import LLM_CALLS, triage

result = triage.replay(limit={CALLS})
print(json.dumps({{"result": result.to_dict(), "llm_calls": LLM_CALLS["n"]}}), flush=True)
"""
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    db = tmp_path_factory.mktemp("e2e-remote") / "served.db"
    key = create_key(db)
    server = ServerProcess(db)
    try:
        yield server, key
    finally:
        server.stop()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "triage_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "record.py").write_text(RECORD)
    (tmp_path / "replay.py").write_text(REPLAY)
    return tmp_path


def _lines(stdout: str) -> dict[str, Any]:
    """The JSON lines a script printed, merged into one dict."""
    merged: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


def test_record_in_one_process_and_replay_in_another(
    served: tuple[ServerProcess, str], app_dir: Path
) -> None:
    """20 calls recorded by an app process reach the server at its normal exit; a second
    process with a changed rule replays them there: verdicts, mocks, the run's URL, and the
    store holds exactly what the two processes had acknowledged, once each."""
    server, key = served
    env = {"BITFAB_URL": server.url, "BITFAB_API_KEY": key}
    recorded = run_script(app_dir / "record.py", cwd=app_dir, env=env)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stderr == ""
    app = _lines(recorded.stdout)
    assert app["llm_calls"] == CALLS
    assert app["stats"] == {
        "emitted": 2 * CALLS,
        "exported": 2 * CALLS,
        "queued": 0,
        "in_flight": 0,
        "dropped": {},
    }
    assert len(span_ids(server.db)) == 2 * CALLS  # sent by the atexit flush, all stored

    replayed = run_script(app_dir / "replay.py", cwd=app_dir, env={**env, "TRIAGE_RULE": "v2"})
    assert replayed.returncode == 0, replayed.stderr
    assert key not in replayed.stderr
    out = _lines(replayed.stdout)
    result = out["result"]
    assert out["llm_calls"] == 0, "the fake LLM ran during the replay instead of its recording"

    items = result["items"]
    assert len(items) == CALLS
    assert result["completed"] is True
    assert result["dry_run"] is False
    billing = {i for i in range(CALLS) if i % 3 == 0}
    verdicts = {item["original_output"]["ticket"]: item["verdict"] for item in items}
    assert verdicts == {i: "changed" if i in billing else "same" for i in range(CALLS)}
    assert Counter(verdicts.values()) == {"changed": len(billing), "same": CALLS - len(billing)}
    for item in items:
        number = item["original_output"]["ticket"]
        assert item["mocked"] == [LLM_KEY]
        assert item["result"]["priority"] == (
            "urgent" if number in billing else item["original_output"]["priority"]
        )
        assert item["error"] is None
        assert item["original_model"] == "fake-llm-1"
        assert item["original_tokens"]["output"] == 2
        assert item["original_tokens"]["input"] > 0
    assert result["ok"] is False  # changed items are regressions

    run_id = result["test_run_id"]
    assert isinstance(run_id, str) and run_id
    assert result["test_run_url"] == f"{server.url}/runs/{run_id}"

    replay_stats = out["stats"]
    assert replay_stats["dropped"] == {}
    assert replay_stats["queued"] == replay_stats["in_flight"] == 0
    # Each replayed call is recorded too: its root and the mocked fake LLM call.
    assert replay_stats["exported"] == replay_stats["emitted"] == 2 * CALLS

    ids = span_ids(server.db)
    assert len(ids) == len(set(ids)), "a span was stored twice"
    assert len(ids) == 2 * CALLS + replay_stats["exported"]
    assert integrity(server.db) == [("ok",)]
    with SQLiteStore(server.db) as store:
        run = store.get_test_run(run_id)
        replay_trace_ids = store.replay_trace_ids(run_id)
        roots = store.newest_roots(TRIAGE_KEY, 100)
    assert run is not None
    assert run.status == "completed"
    assert run.key == TRIAGE_KEY
    assert len(run.items) == CALLS
    assert sorted(item.verdict or "" for item in run.items) == sorted(
        item["verdict"] for item in items
    )
    assert len(replay_trace_ids) == CALLS  # one replayed trace per item
    assert len(roots) == CALLS  # the originals; replayed roots are not selectable
    assert {root["traceId"] for root in roots} == {item["original_trace_id"] for item in items}


def test_a_wrong_key_drops_spans_as_401_and_the_app_runs_on(
    served: tuple[ServerProcess, str], app_dir: Path
) -> None:
    """A key the server refuses: every call still returns its value, the drops are counted as
    ``http_401`` in ``bitfab.stats()``, one warning, and the key is never shown."""
    server, key = served
    wrong = key[:-6] + ("AAAAAA" if not key.endswith("AAAAAA") else "BBBBBB")
    before = span_ids(server.db)
    done = run_script(
        app_dir / "record.py",
        "--flush",
        cwd=app_dir,
        env={"BITFAB_URL": server.url, "BITFAB_API_KEY": wrong},
    )
    assert done.returncode == 0, done.stderr
    out = _lines(done.stdout)
    assert out["after_flush"] is True
    assert [r["ticket"] for r in out["results"]] == list(range(CALLS))
    assert out["llm_calls"] == CALLS
    assert out["stats"]["dropped"] == {"http_401": 2 * CALLS}
    assert out["stats"]["exported"] == 0
    assert wrong not in done.stderr and key not in done.stderr
    assert wrong not in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "HTTP 401" in line]
    assert len(warnings) == 1, done.stderr
    assert span_ids(server.db) == before
