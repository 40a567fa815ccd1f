"""The OpenAPI description is served, and fuzzing every operation it describes finds no 500
and no answer that breaks it (schemathesis, a bounded number of examples per operation).

schemathesis's own pytest integration (``schema.parametrize()``) does not run under pytest 9
(it reads a removed private attribute), so the operations are driven with hypothesis directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from server_helpers import Api, span_record

from bitfab.server import create_app
from bitfab.store import SQLiteStore

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import negative_data_rejection  # noqa: E402

EXAMPLES = 20


@pytest.fixture
def seeded_app(store: SQLiteStore, keys: dict[str, str]) -> Any:
    """The app over a store with a trace and a run in it."""
    app = create_app(store)
    api = Api(app, key=keys["all"])
    try:
        api.post(
            "/api/bitfab/v1/ingest",
            json={"spans": [span_record("s1", "t1"), span_record("s2", "t1", parent="s1")]},
        )
        api.post("/api/sdk/replay/start", json={"traceFunctionKey": "triage"})
    finally:
        api.close()
    return app


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_break_the_server(
    seeded_app: Any, keys: dict[str, str], mode: Any
) -> None:
    """Valid and invalid requests from the description: no 5xx, answers as described."""
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", seeded_app)
    headers = {"Authorization": f"Bearer {keys['all']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8

    for operation in operations:
        has_inputs = len(operation.query) + len(operation.path_parameters) + len(operation.body)
        if mode == GenerationMode.NEGATIVE and not has_inputs:
            continue  # nothing to get wrong in a request without inputs

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            # Unknown query parameters are ignored by design (PROTOCOL.md), which schemathesis's
            # negative_data_rejection counts as accepting invalid data; every other check runs.
            case.call_and_validate(headers=headers, excluded_checks=[negative_data_rejection])

        fuzz()


def test_the_description_lists_the_read_api(api: Api) -> None:
    """/api/v1/openapi.json is OpenAPI 3.1 with every read route and limit's maximum."""
    document = api.get("/api/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert sorted(document["paths"]) == [
        "/api/bitfab/v1/ingest",
        "/api/v1/functions",
        "/api/v1/runs",
        "/api/v1/runs/{runId}",
        "/api/v1/spans/{spanId}",
        "/api/v1/traces",
        "/api/v1/traces/{traceId}",
        "/healthz",
    ]
    limit = next(
        p for p in document["paths"]["/api/v1/traces"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert limit["schema"]["maximum"] == 1000
