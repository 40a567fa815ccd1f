"""The read commands against a server: ``/api/v1`` answers as the store's own types.

When ``BITFAB_URL`` is set (and no ``--db`` is given), ``bitfab functions|traces|show|runs|run``
read through :class:`ServerReader` instead of a local store. It speaks the server's read API
with the same hostile-answer handling as a remote replay (size caps, JSON checks, no
redirects, the key never shown) and checks every field's type before the CLI formats it, so
a wrong answer is one clear error line, never a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from bitfab.cli._common import CliError
from bitfab.config import Config, display_url
from bitfab.exceptions import ConfigError, ReplayError
from bitfab.playback.remote import RemoteBackend
from bitfab.store.base import FunctionStats, TestRun, TestRunItem, TraceSummary

__all__ = ["ServerReader"]

T = TypeVar("T")

# What an annotation's names admit (the store's dataclasses use only these).
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
}
_PAGE = 1000
"""The largest page this reader asks for (the server's default max_page)."""


class ServerReader:
    """The read subset of :class:`~bitfab.store.base.Store`, answered by a bitfab server."""

    def __init__(self, config: Config) -> None:
        if config.url is None:
            raise CliError(
                "BITFAB_URL is not a usable server URL (see the warning above); fix it, or pass"
                " --db PATH to read a local store"
            )
        self.url = config.url
        self._last_trace: tuple[str, dict[str, Any] | None] | None = None
        try:
            self._backend = RemoteBackend(
                config.url, config.api_key, allow_insecure_http=config.allow_insecure_http
            )
        except ConfigError as exc:
            raise CliError(str(exc)) from None

    def __repr__(self) -> str:
        return f"ServerReader({display_url(self.url)!r})"

    def where(self) -> str:
        return f"the server at {display_url(self.url)}"

    def close(self) -> None:
        self._backend.close()

    # -- the store's read methods -------------------------------------------------------------

    def functions(self) -> list[FunctionStats]:
        answer = self._get("/api/v1/functions")
        return [_build(FunctionStats, row, "functions") for row in _rows(answer, "functions")]

    def traces(
        self, key: str | None = None, *, limit: int = 50, errors_only: bool = False
    ) -> list[TraceSummary]:
        params = {"limit": str(min(limit, _PAGE)), "errors": "true" if errors_only else "false"}
        if key is not None:
            params["key"] = key
        answer = self._get("/api/v1/traces", params)
        return [_build(TraceSummary, row, "traces") for row in _rows(answer, "traces")]

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]:
        answer = self._trace(trace_id)
        if answer is None:
            return []
        return [dict(span) for span in _rows(answer, "spans")]

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        answer = self._trace(trace_id)
        completion = None if answer is None else answer.get("completion")
        return dict(completion) if isinstance(completion, Mapping) else None

    def list_test_runs(self, key: str | None = None, *, limit: int = 50) -> list[TestRun]:
        params = {"limit": str(min(limit, _PAGE))}
        if key is not None:
            params["key"] = key
        answer = self._get("/api/v1/runs", params)
        return [_run(row) for row in _rows(answer, "runs")]

    def get_test_run(self, run_id: str) -> TestRun | None:
        answer = self._get(f"/api/v1/runs/{quote(run_id, safe='')}", missing_ok=True)
        if answer is None:
            return None
        run = answer.get("run")
        if not isinstance(run, Mapping):
            raise _shape("runs/{id}", "`run` is not an object")
        return _run(run)

    def _trace(self, trace_id: str) -> dict[str, Any] | None:
        # One GET answers both trace_spans and get_trace (`bitfab show` asks for both).
        if self._last_trace is None or self._last_trace[0] != trace_id:
            path = f"/api/v1/traces/{quote(trace_id, safe='')}"
            self._last_trace = (trace_id, self._get(path, missing_ok=True))
        return self._last_trace[1]

    # -- one GET ------------------------------------------------------------------------------

    def _get(
        self, path: str, params: Mapping[str, str] | None = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        try:
            return self._backend.get_json(path, params, missing_ok=missing_ok)
        except ReplayError as exc:
            raise CliError(str(exc)) from None


def _rows(answer: Mapping[str, Any] | None, name: str) -> list[Mapping[str, Any]]:
    rows = None if answer is None else answer.get(name)
    if not isinstance(rows, list) or not all(isinstance(row, Mapping) for row in rows):
        raise _shape(name, f"`{name}` is not a list of objects")
    return rows


def _run(data: Mapping[str, Any]) -> TestRun:
    items = data.get("items") or []
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        raise _shape("runs", "a run's `items` is not a list of objects")
    fields = {name: value for name, value in data.items() if name != "items"}
    run = _build(TestRun, fields, "runs")
    built = tuple(_build(TestRunItem, item, "runs") for item in items)
    return dataclasses.replace(run, items=built)


def _build(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)`` over the fields ``cls`` declares, each checked against its annotation."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name not in data:
            continue  # the dataclass default applies; missing required fields fail below
        value = data[spec.name]
        if not _fits(value, str(spec.type)):
            raise _shape(what, f"field {spec.name!r} is {type(value).__name__}, not {spec.type}")
        values[spec.name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise _shape(what, str(exc)) from None


def _fits(value: Any, annotation: str) -> bool:
    for name in annotation.split("|"):
        name = name.strip()
        base = name.split("[", 1)[0]
        if base in ("Mapping", "dict"):
            if isinstance(value, Mapping):
                return True
        elif base == "tuple":
            if isinstance(value, list):
                return True
        elif base in _KINDS:
            if isinstance(value, bool) and base != "bool":
                continue
            if isinstance(value, _KINDS[base]):
                return True
        else:  # an annotation this reader does not know: accept rather than refuse
            return True
    return False


def _shape(what: str, detail: str) -> CliError:
    return CliError(
        f"the server's /api/v1/{what} answer has an unexpected shape ({detail}); is BITFAB_URL"
        " a bitfab server of the same version?"
    )
