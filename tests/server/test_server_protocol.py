"""Protocol conformance: raw JSON shaped like the Bitfab SDKs' in, PROTOCOL.md's answers out."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any
from urllib.parse import quote

from server_helpers import Api, otlp, span_record, trace_record

from bitfab.store import SQLiteStore

JSON = {"Content-Type": "application/json"}
USAGE = {
    "provider": "openai",
    "model": "gpt-test",
    "inputTokens": 10,
    "outputTokens": 5,
    "cachedInputTokens": 2,
}


def record_one_call(api: Api, trace_id: str = "t1", *, start: float = 0.0) -> dict[str, Any]:
    """A root ``triage`` call with a nested LLM call, recorded over OTLP like the other SDKs."""
    root = span_record(
        f"{trace_id}-root",
        trace_id,
        start=start,
        end=start + 0.9,
        input=[{"ticket": "printer on fire"}, {"lang": "en"}],
        output={"verdict": "urgent"},
    )
    root["rawSpan"]["span_data"]["input_meta"]["kwarg_names"] = ["lang"]
    child = span_record(
        f"{trace_id}-llm",
        trace_id,
        parent=f"{trace_id}-root",
        key="llm",
        start=start + 0.1,
        end=start + 0.5,
        output="urgent",
        contexts=[USAGE],
    )
    answer = api.post(
        "/api/sdk/otel/v1/traces",
        json=otlp(
            ("external_span", child),
            ("external_span", root),
            ("internal_trace", {"ignored": True}),
            ("external_trace", trace_record(trace_id, expected=2)),
        ),
    )
    assert answer.status_code == 200
    assert answer.json() == {"partialSuccess": {}, "traceIds": {trace_id: trace_id}}
    return {"root": root, "child": child}


def test_a_recorded_call_replays_through_the_sdk_endpoints(api: Api, store: SQLiteStore) -> None:
    """OTLP carriers in; start, externalSpans, spanTree, status, complete out, as an SDK drives."""
    recorded = record_one_call(api)
    assert store.count_spans() == 2

    started = api.post(
        "/api/sdk/replay/start",
        json={"traceFunctionKey": "triage", "limit": 5, "name": "after the fix", "extra": 1},
    ).json()
    run_id = started["testRunId"]
    assert started == {
        "experimentId": run_id,
        "testRunId": run_id,
        "experimentUrl": f"/runs/{run_id}",
        "testRunUrl": f"/runs/{run_id}",
        "items": [
            {
                "originalTraceId": "t1",
                "originalSpanId": "t1-root",
                "sourceTraceId": "t1",
                "sourceSpanId": "t1-root",
                "externalSpanId": "t1-root",
                "originalDurationMs": 900.0,
                "durationMs": 900.0,
                "originalTokens": {"input": 10, "output": 5, "cached": 2, "total": 15},
                "tokens": {"input": 10, "output": 5, "cached": 2, "total": 15},
                "originalModel": "gpt-test",
                "model": "gpt-test",
            }
        ],
        "unknownTraceIds": [],
    }

    span = api.get("/api/sdk/externalSpans/t1-root", params={"view": "replay"}).json()
    assert span == {
        "id": "t1-root",
        "externalTraceId": "t1",
        "rawData": {"span_data": recorded["root"]["rawSpan"]["span_data"]},
        "record": recorded["root"],
    }

    tree = api.get(
        "/api/sdk/replay/spanTree/t1-root",
        params={"includeOutputs": "true", "includeRootOutput": "false"},
    ).json()
    assert tree == {
        "root": {
            "sourceSpanId": "t1-root",
            "externalSpanId": "t1-root",
            "traceFunctionKey": "triage",
            "spanName": "triage",
            "type": "function",
            "children": [
                {
                    "sourceSpanId": "t1-llm",
                    "externalSpanId": "t1-llm",
                    "traceFunctionKey": "llm",
                    "spanName": "llm",
                    "type": "function",
                    "output": "urgent",
                    "outputMeta": {"v": 1, "values": {}},
                    "children": [],
                }
            ],
        }
    }
    bare = api.get("/api/sdk/replay/spanTree/t1-root?includeOutputs=false").json()
    assert "output" not in bare["root"]["children"][0]

    # The replaying SDK records the new trace with the run id under both names, through the
    # single-record endpoints this time.
    replayed = span_record("r1-root", "r1", run=run_id, source_span="t1-root", contexts=[USAGE])
    assert api.post("/api/sdk/externalSpans", json=replayed).json() == {"id": "r1-root"}
    assert api.post("/api/sdk/externalTraces", json=trace_record("r1", run=run_id)).json() == {
        "id": "r1"
    }

    status = api.post(
        "/api/sdk/replay/status",
        json={
            "experimentId": run_id,
            "testRunId": run_id,
            "expectedSpanCounts": {"r1": 1, "rx": 1},
        },
    )
    assert status.json() == {"traceIds": {"r1": "r1"}}
    assert api.post("/api/sdk/replay/heartbeat", json={"testRunId": run_id}).json() == {}

    item = {
        "index": 0,
        "verdict": "same",
        "trace_id": "r1",
        "original_trace_id": "t1",
        "original_span_id": "t1-root",
        "result": {"verdict": "urgent"},
    }
    completed = api.post(
        "/api/sdk/replay/complete",
        json={
            "experimentId": run_id,
            "testRunId": run_id,
            "items": [item],
            "summary": {"total": 1},
        },
    )
    assert completed.json() == {
        "traceIds": {"r1": "r1"},
        "tokens": {"r1": {"input": 10, "output": 5, "cached": 2, "total": 15}},
        "traceCount": 1,
    }
    run = api.get(f"/api/v1/runs/{run_id}").json()["run"]
    assert (run["status"], run["name"], run["summary"]) == (
        "completed",
        "after the fix",
        {"total": 1},
    )
    assert run["items"] == [
        {
            "idx": 0,
            "original_trace_id": "t1",
            "original_span_id": "t1-root",
            "replay_trace_id": "r1",
            "verdict": "same",
            "item": item,
        }
    ]


def test_complete_without_items_covers_every_replay_trace_of_the_run(api: Api) -> None:
    """Other SDKs complete with ids only; traceIds still lists every trace recorded in the run."""
    record_one_call(api)
    run_id = api.post("/api/sdk/replay/start", json={"traceFunctionKey": "triage"}).json()[
        "experimentId"
    ]
    for n in range(3):
        api.post("/api/sdk/externalSpans", json=span_record(f"r{n}", f"r{n}", run=run_id))
    answer = api.post("/api/sdk/replay/complete", json={"experimentId": run_id}).json()
    assert answer["traceIds"] == {"r0": "r0", "r1": "r1", "r2": "r2"}
    assert answer["traceCount"] == 3


def test_a_dry_run_answers_null_ids_and_creates_nothing(api: Api, store: SQLiteStore) -> None:
    """dryRun selects the items but stores no run."""
    record_one_call(api)
    answer = api.post(
        "/api/sdk/replay/start", json={"traceFunctionKey": "triage", "dryRun": True}
    ).json()
    assert [answer[k] for k in ("experimentId", "testRunId", "experimentUrl", "testRunUrl")] == [
        None
    ] * 4
    assert [item["originalTraceId"] for item in answer["items"]] == ["t1"]
    assert store.list_test_runs() == []


def test_start_with_trace_ids_reports_the_unknown_ones(api: Api) -> None:
    """traceIds selects exactly those roots; unknown ids (and replays) come back as unknown."""
    record_one_call(api, "t1", start=0)
    record_one_call(api, "t2", start=2)
    answer = api.post(
        "/api/sdk/replay/start",
        json={
            "traceFunctionKey": "triage",
            "traceIds": ["t1", "nope"],
            "metadata": {"options": {"max_concurrency": 3}, "codeVersion": "abc123"},
        },
    ).json()
    assert [item["originalTraceId"] for item in answer["items"]] == ["t1"]
    assert answer["unknownTraceIds"] == ["nope"]


def test_start_without_limit_selects_the_newest_five(api: Api, store: SQLiteStore) -> None:
    """The default limit is 5, newest first; options and code version land on the run."""
    for n in range(7):
        record_one_call(api, f"t{n}", start=n)
    answer = api.post(
        "/api/sdk/replay/start",
        json={
            "traceFunctionKey": "triage",
            "notes": "n",
            "metadata": {"options": {"max_concurrency": 3}, "codeVersion": "abc123"},
        },
    ).json()
    assert [item["originalTraceId"] for item in answer["items"]] == ["t6", "t5", "t4", "t3", "t2"]
    run = store.get_test_run(answer["testRunId"])
    assert run is not None
    assert (run.options, run.code_version, run.extra["notes"]) == (
        {"max_concurrency": 3},
        "abc123",
        "n",
    )


def test_interrupt_marks_the_run_and_unknown_runs_are_404(api: Api, store: SQLiteStore) -> None:
    """interrupt answers {} and sets the status; heartbeat/interrupt/complete of no run: 404."""
    record_one_call(api)
    run_id = api.post("/api/sdk/replay/start", json={"traceFunctionKey": "triage"}).json()[
        "testRunId"
    ]
    assert api.post("/api/sdk/replay/interrupt", json={"testRunId": run_id}).json() == {}
    run = store.get_test_run(run_id)
    assert run is not None and run.status == "interrupted"
    for path in ("heartbeat", "interrupt", "complete"):
        answer = api.post(f"/api/sdk/replay/{path}", json={"testRunId": "no-such-run"})
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")


def test_unknown_spans_are_404(api: Api) -> None:
    """externalSpans and spanTree of an unknown id answer 404 in the error shape."""
    for path in ("/api/sdk/externalSpans/nope?view=replay", "/api/sdk/replay/spanTree/nope"):
        answer = api.get(path)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")


def test_sim_plan_is_empty(make_api: Any) -> None:
    """Any valid key gets {"nodes": []}: clients keep recording content."""
    for scope in ("ingest", "read", "all"):
        assert make_api(scope).get("/api/sdk/sim-plan").json() == {"nodes": []}


def test_batch_ingest_is_idempotent_and_rejects_per_record(api: Api, store: SQLiteStore) -> None:
    """A retried batch adds no row; invalid records are named with their index and field,
    whether this server's checks or the store refused them."""
    good = [span_record("a", "ta"), span_record("b", "ta", parent="a")]
    surrogate = span_record("\ud800", "tf")  # valid JSON, but no id the store can index
    bad_time = span_record("c", "tc")
    bad_time["rawSpan"]["started_at"] = "yesterday"
    backwards = span_record("d", "td", start=2, end=1)
    long_id = span_record("e" * 201, "te")
    body = {
        "spans": [good[0], surrogate, good[1], bad_time, "not a record", backwards, long_id],
        "traces": [trace_record("ta", expected=2), {"expectedSpanCount": 1}],
    }
    text = json.dumps(body)  # ASCII, the lone surrogate escaped

    def send() -> dict[str, Any]:
        answer = api.post("/api/bitfab/v1/ingest", content=text, headers=JSON)
        result: dict[str, Any] = answer.json()
        return result

    assert send() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": [
            {
                "kind": "span",
                "index": 1,
                "id": "\ud800",
                "reason": "id is not valid Unicode (lone surrogate)",
            },
            {
                "kind": "span",
                "index": 3,
                "id": "c",
                "reason": "rawSpan.started_at: must be an ISO-8601 timestamp",
            },
            {
                "kind": "span",
                "index": 4,
                "id": None,
                "reason": "$: a span record must be a JSON object, got a string",
            },
            {
                "kind": "span",
                "index": 5,
                "id": "d",
                "reason": "rawSpan.ended_at: is before started_at",
            },
            {
                "kind": "span",
                "index": 6,
                "id": "e" * 200,
                "reason": "id: is longer than 200 characters",
            },
            {"kind": "trace", "index": 1, "id": None, "reason": "id: is required"},
        ],
    }
    second = send()
    assert (second["accepted"], second["duplicates"]) == (3, 3)
    assert store.count_spans() == 2


def test_a_conflicting_duplicate_keeps_the_first(api: Api, store: SQLiteStore) -> None:
    """E8: the same id with other content is accepted as a duplicate; the first stays."""
    first = span_record("s", "t", output="first")
    api.post("/api/sdk/externalSpans", json=first)
    second = copy.deepcopy(first)
    second["rawSpan"]["span_data"]["output"] = "second"
    assert api.post("/api/sdk/externalSpans", json=second).status_code == 200
    assert store.get_span("s") == first
    assert store.count_spans() == 1


def test_otlp_partial_success_names_what_was_rejected(api: Api, store: SQLiteStore) -> None:
    """Bad carriers and bad records are counted in partialSuccess; the rest is stored."""
    no_trace = span_record("x", "tx")
    del no_trace["traceId"]
    answer = api.post(
        "/api/sdk/otel/v1/traces",
        json=otlp(
            ("external_span", span_record("ok", "tok")),
            ("external_span", no_trace),
            ("external_span", '{"id": NaN}'),
            ("who_knows", span_record("y", "ty")),
        ),
    ).json()
    assert answer["traceIds"] == {"tok": "tok"}
    assert answer["partialSuccess"]["rejectedSpans"] == 3
    message = answer["partialSuccess"]["errorMessage"]
    assert "traceId: is required" in message
    assert "bitfab.payload: the body is not valid JSON" in message
    assert "bitfab.operation is missing or unknown" in message
    assert store.count_spans() == 1


def test_single_record_endpoints_answer_422_with_the_field_path(api: Api) -> None:
    """One invalid record is a 422 whose detail and fields name the path."""
    record = span_record("s", "t")
    del record["rawSpan"]["started_at"]
    answer = api.post("/api/sdk/externalSpans", json=record)
    assert answer.status_code == 422
    assert answer.json()["fields"] == [
        {"path": "body.rawSpan.started_at", "message": "is required"}
    ]
    answer = api.post("/api/sdk/externalTraces", json={"id": 7})
    assert answer.status_code == 422
    assert answer.json()["fields"][0]["path"] == "body.id"


def test_gzip_bodies_are_accepted(api: Api, store: SQLiteStore) -> None:
    """Content-Encoding: gzip is inflated before parsing."""
    body = gzip.compress(json.dumps({"spans": [span_record("g", "tg")]}).encode())
    answer = api.post(
        "/api/bitfab/v1/ingest",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.json()["accepted"] == 1
    assert store.get_span("g") is not None


def test_records_round_trip_exactly_including_odd_strings(api: Api) -> None:
    """span_data comes back exactly as sent: lone surrogates, NUL, non-ASCII, big integers."""
    record = span_record("odd", "todd", output={"s": "\ud800 \x00 é 🎉", "n": 2**70})
    text = json.dumps(record)  # escapes the lone surrogate as \\ud800, as Python SDKs send it
    api.post("/api/sdk/externalSpans", content=text, headers={"Content-Type": "application/json"})
    back = api.get("/api/sdk/externalSpans/odd").json()
    assert back["rawData"]["span_data"] == record["rawSpan"]["span_data"]


def test_ids_with_slashes_and_large_answers_gzipped(api: Api) -> None:
    """An id holding '/' (sent as %2F) is found; a large answer is gzipped when accepted."""
    big = span_record("a/b", "t/1", output="x" * 50_000)
    api.post("/api/sdk/externalSpans", json=big)
    answer = api.get(f"/api/sdk/externalSpans/{quote('a/b', safe='')}", params={"view": "replay"})
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json()["record"] == big
    tree = api.get(f"/api/sdk/replay/spanTree/{quote('a/b', safe='')}").json()
    assert tree["root"]["output"] == "x" * 50_000
    assert api.get(f"/api/v1/traces/{quote('t/1', safe='')}").json()["spans"] == [big]
