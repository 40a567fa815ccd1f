"""Replay treats recorded data as hostile (RELIABILITY.md D1-D7, D10).

Crafted span records are written straight into the store, shaped like a real recorded record,
then replayed. Each bad item fails with a reason; nothing named in the data is imported, called
or unpickled: tripwires on ``os.system``, ``subprocess.Popen``, ``importlib.import_module``,
``__import__``, ``eval``/``exec`` and ``pickle`` record any use, and a module on ``sys.path``
whose import would create a file must stay unimported.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import importlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pydantic
import pytest
from replay_helpers import forge, newest_root

from bitfab import Bitfab
from bitfab.store import Store

SENTINEL_MODULE = "bitfab_evil_sentinel"
_FORBIDDEN_IMPORTS = frozenset(
    {SENTINEL_MODULE, "pickle", "_pickle", "marshal", "shelve", "yaml", "jsonpickle", "dill"}
)


@dataclasses.dataclass
class Ticket:
    id: int
    subject: str


class Note(pydantic.BaseModel):
    text: str


@dataclasses.dataclass
class NotAllowed:
    """A real dataclass that no traced function names: replay must not rebuild it."""

    x: int


class Tripwire:
    """Records every use of a dangerous entry point while installed."""

    def __init__(self, tmp_path: Path) -> None:
        self.hits: list[str] = []
        self.pwned = tmp_path / "pwned"

    def hit(self, what: str) -> None:
        self.hits.append(what)
        raise AssertionError(f"tripwire: {what}")

    def assert_untouched(self) -> None:
        assert self.hits == []
        assert not self.pwned.exists()
        assert SENTINEL_MODULE not in sys.modules


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Tripwire]:
    """Install the tripwires and the sentinel module for one test."""
    wire = Tripwire(tmp_path)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{SENTINEL_MODULE}.py").write_text(
        f"open({str(wire.pwned)!r}, 'w').close()\n"
        "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class Boom:\n"
        "    x: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(modules))

    real_import = builtins.__import__
    real_popen = subprocess.Popen

    def guarded_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in _FORBIDDEN_IMPORTS:
            wire.hit(f"__import__({name!r})")
        return real_import(name, *args, **kwargs)

    class GuardedPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            # replay runs `git rev-parse` for the code version: a fixed command, not from data
            if list(args)[:2] != ["git", "rev-parse"]:
                wire.hit(f"subprocess.Popen({args!r})")
            super().__init__(args, *rest, **kwargs)

    def trap(what: str) -> Any:
        return lambda *args, **kwargs: wire.hit(f"{what}{args!r}")

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    monkeypatch.setattr(builtins, "eval", trap("eval"))
    monkeypatch.setattr(builtins, "exec", trap("exec"))
    monkeypatch.setattr(importlib, "import_module", trap("importlib.import_module"))
    monkeypatch.setattr(os, "system", trap("os.system"))
    monkeypatch.setattr(os, "popen", trap("os.popen"))
    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    monkeypatch.setattr(pickle, "loads", trap("pickle.loads"))
    monkeypatch.setattr(pickle, "load", trap("pickle.load"))
    yield wire
    sys.modules.pop(SENTINEL_MODULE, None)


class App:
    """A traced ``handle(ticket, note=...)`` with a marked nested LLM call; counts real calls."""

    def __init__(self, bf: Bitfab) -> None:
        self.handled: list[tuple[Any, ...]] = []
        self.llm_calls: list[str] = []

        @bf.trace(key="llm", mock_on_replay=True)
        def llm(prompt: str) -> Note:
            self.llm_calls.append(prompt)
            return Note(text=f"re: {prompt}")

        @bf.trace(key="handle")
        def handle(ticket: Ticket, note: Note | None = None) -> str:
            self.handled.append((ticket, note))
            return llm(ticket.subject).text

        self.handle = handle
        handle(Ticket(1, "printer"), note=Note(text="urgent"))
        bf.flush()
        self.handled.clear()
        self.llm_calls.clear()


def _call(value: Any, meta: Any = None) -> dict[str, Any]:
    """``span_data`` fields of a call whose only argument is ``value`` with annotation ``meta``."""
    data: dict[str, Any] = {"input": [value]}
    data["input_meta"] = {"v": 1, "values": {"0": [meta]}} if meta is not None else None
    return data


def _tagged(tag: str, params: Mapping[str, Any] | None = None) -> list[Any]:
    return ["custom", tag] if params is None else ["custom", tag, dict(params)]


PICKLE_BLOB = base64.b64encode(pickle.dumps({"x": 1})).decode()

HOSTILE: dict[str, tuple[dict[str, Any], tuple[str, ...], str]] = {
    # D1: type tags and classes that name code
    "tag os:system": (
        _call("touch pwned", _tagged("os:system")),
        (),
        "unknown tag 'os:system' (at $[0])",
    ),
    "tag builtins:eval": (
        _call("__import__('os').system('x')", _tagged("builtins:eval")),
        (),
        "unknown tag 'builtins:eval' (at $[0])",
    ),
    "tag subprocess.Popen with args": (
        _call(["touch", "pwned"], _tagged("subprocess.Popen", {"args": ["touch", "pwned"]})),
        (),
        "unknown tag 'subprocess.Popen' (at $[0])",
    ),
    "dataclass named os:system": (
        _call({"command": "touch pwned"}, _tagged("py:dataclass", {"class": "os:system"})),
        (),
        "class 'os:system' is not allowed",
    ),
    "model named builtins:eval": (
        _call({"source": "1"}, _tagged("py:model", {"class": "builtins:eval"})),
        (),
        "class 'builtins:eval' is not allowed",
    ),
    "enum named importlib:import_module": (
        _call("os", _tagged("py:enum", {"class": "importlib:import_module"})),
        (),
        "class 'importlib:import_module' is not allowed",
    ),
    "dataclass from an importable module": (
        _call({"x": 1}, _tagged("py:dataclass", {"class": f"{SENTINEL_MODULE}:Boom"})),
        (),
        f"class '{SENTINEL_MODULE}:Boom' is not allowed",
    ),
    "a real dataclass that is not allowed": (
        _call({"x": 1}, _tagged("py:dataclass", {"class": f"{__name__}:NotAllowed"})),
        (),
        f"class '{__name__}:NotAllowed' is not allowed",
    ),
    # D2: another SDK's pickle-style fallback in the sidecar
    "pickle copy sidecar": (
        {"input": [{"id": 1, "subject": "x"}], "input_meta": {"v": 1, "copy": PICKLE_BLOB}},
        (),
        "the sidecar has 'copy': another SDK's pickle-style fallback, never decoded",
    ),
    "pickle copies sidecar": (
        {"input": [{"id": 1, "subject": "x"}], "input_meta": {"v": 1, "copies": [PICKLE_BLOB]}},
        (),
        "the sidecar has 'copies'",
    ),
    # D4: an allow-list carried by the data is ignored
    "allow-list in the data": (
        {
            "input": [{"command": "x"}],
            "input_meta": {
                "v": 1,
                "trusted": ["os:system"],
                "allow": ["os:system"],
                "values": {"0": [_tagged("py:dataclass", {"class": "os:system"})]},
            },
        },
        (),
        "class 'os:system' is not allowed",
    ),
    # D5: the shape of an allowed class is wrong
    "missing field": (
        _call({"id": 1}, _tagged("py:dataclass", {"class": f"{__name__}:Ticket"})),
        (),
        "Ticket is missing field(s) ['subject'] (at $[0])",
    ),
    "extra field": (
        _call(
            {"id": 1, "subject": "x", "__reduce__": ["os.system", ["touch pwned"]]},
            _tagged("py:dataclass", {"class": f"{__name__}:Ticket"}),
        ),
        (),
        "Ticket has no field(s) ['__reduce__'] (at $[0])",
    ),
    "model with a wrong type": (
        _call({"text": ["not", "a", "string"]}, _tagged("py:model", {"class": f"{__name__}:Note"})),
        (),
        "Note rejected the recorded data",
    ),
    "kwarg names that don't match": (
        {"input": [{"ticket": 1}], "input_meta": {"v": 1, "kwarg_names": ["note"]}},
        (),
        "do not match kwarg_names ['note']",
    ),
    "input that is not a list of arguments": (
        {"input": {"ticket": 1}, "input_meta": None},
        (),
        "recorded call input must be a list of arguments",
    ),
    "sidecar that is not an object": (
        {"input": [1], "input_meta": ["custom", "py:dataclass"]},
        (),
        "the type sidecar must be an object",
    ),
    # D6: a sidecar from a newer bitfab
    "newer sidecar version": (
        {"input": [1], "input_meta": {"v": 99, "values": {}}},
        (),
        "sidecar version 99 is newer than this bitfab understands: upgrade bitfab",
    ),
    # D7: recorded inexactly
    "flagged not replayable": (
        {"replayable": False, "not_replayable": ["truncated string at $[0].subject"]},
        (),
        "not replayable: truncated string at $[0].subject",
    ),
    "truncated value with a forged replayable flag": (
        {
            **_call("printer on fi...", _tagged("bitfab:truncated", {"size": 10_000})),
            "replayable": True,
        },
        (),
        "the value was truncated when it was recorded (tag 'bitfab:truncated') (at $[0])",
    ),
    "placeholder of an unserializable value": (
        _call("<unserializable: socket>", _tagged("bitfab:unserializable", {"type": "socket"})),
        (),
        "the value could not be serialized when it was recorded",
    ),
    "missing input": ({}, ("input", "input_meta"), "not replayable: the recording has no input"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_recording_fails_its_item_and_runs_nothing(
    bf: Bitfab, store: Store, tripwire: Tripwire, case: str
) -> None:
    """The crafted item is ``not_replayable`` with the reason; the function is never called and no
    tripwire fires. A good recording in the same run still replays."""
    app = App(bf)
    template = newest_root(store, "handle")
    span_data, drop, reason = HOSTILE[case]
    bad = forge(template, span_data=span_data, drop=drop)
    assert store.write([bad]).rejected == ()

    result = app.handle.replay(limit=10)

    by_trace = {item.original_trace_id: item for item in result}
    item = by_trace[bad["traceId"]]
    assert item.verdict == "not_replayable"
    assert reason in (item.error or "")
    assert item.error_type == "NotReplayable"
    assert [i.verdict for i in result if i is not item] == ["same"]
    assert app.handled == [(Ticket(1, "printer"), Note(text="urgent"))]
    tripwire.assert_untouched()


def test_a_span_without_span_data_fails_with_a_reason(
    bf: Bitfab, store: Store, tripwire: Tripwire
) -> None:
    """A record whose ``rawSpan`` has no ``span_data`` is refused, not half-replayed."""
    app = App(bf)
    bad = forge(newest_root(store, "handle"))
    del bad["rawSpan"]["span_data"]
    store.write([bad])

    result = app.handle.replay(trace_ids=[bad["traceId"]])

    assert [(i.verdict, i.error) for i in result] == [
        ("not_replayable", "not replayable: the recorded span has no span_data (at $.rawSpan)")
    ]
    assert app.handled == []
    tripwire.assert_untouched()


@pytest.mark.parametrize(
    ("output", "output_meta", "reason"),
    [
        (
            {"text": "x"},
            {"v": 1, "values": [_tagged("py:model", {"class": "os:system"})]},
            "os:system",
        ),
        (
            {"x": 0},
            {"v": 1, "values": [_tagged("py:dataclass", {"class": f"{SENTINEL_MODULE}:Boom"})]},
            SENTINEL_MODULE,
        ),
        ("gASVCAAAAAAAAACMBHRleHSULg==", {"v": 1, "copy": PICKLE_BLOB}, "'copy'"),
        (
            {"text": "x"},
            {"v": 1, "values": [_tagged("builtins:eval")]},
            "unknown tag 'builtins:eval'",
        ),
    ],
)
def test_a_hostile_recorded_output_of_a_mocked_call_fails_closed(
    bf: Bitfab, store: Store, tripwire: Tripwire, output: Any, output_meta: Any, reason: str
) -> None:
    """The nested LLM's recorded output can't be rebuilt: the mock fails closed (the real LLM is not
    called), the item is an error naming the reason, and nothing in the data runs."""
    app = App(bf)
    root_template = newest_root(store, "handle")
    child_template = store.subtree(root_template["id"])[1]
    root = forge(root_template)
    child = forge(
        child_template,
        trace_id=root["traceId"],
        parent_id=root["id"],
        started_at=root["rawSpan"]["started_at"].replace(".000000Z", ".100000Z"),
        span_data={"output": output, "output_meta": output_meta},
    )
    store.write([root, child])

    result = app.handle.replay(trace_ids=[root["traceId"]])

    item = result[0]
    assert item.verdict == "error"
    assert item.error_type == "MockMissingError"
    assert "the recorded output of the mocked call llm" in (item.error or "")
    assert reason in (item.error or "")
    assert app.llm_calls == []
    tripwire.assert_untouched()


def test_user_data_that_looks_like_tags_or_foreign_formats_replays_as_plain_data(
    bf: Bitfab, tripwire: Tripwire
) -> None:
    """D2/D3: a dict with ``$t``, ``custom``, ``py/reduce`` and ``__class__`` keys, a YAML
    ``!!python`` string and pickle bytes are recorded and replayed as the same plain values."""
    received: list[Any] = []

    @bf.trace(key="store_blob")
    def store_blob(doc: dict[str, Any], blob: bytes) -> dict[str, Any]:
        received.append((doc, blob))
        return doc

    doc = {
        "$t": "os.system",
        "custom": ["custom", "py:dataclass", {"class": "os:system"}],
        "py/reduce": [{"py/function": "os.system"}, {"py/tuple": ["touch pwned"]}],
        "__class__": "subprocess.Popen",
        "yaml": "!!python/object/apply:os.system ['touch pwned']",
        "values": {"0": [["custom", "builtins:eval"]]},
    }
    blob = pickle.dumps(["not", "to", "be", "loaded"])
    store_blob(doc, blob)
    received.clear()

    result = store_blob.replay()

    assert [(i.verdict, i.result) for i in result] == [("same", doc)]
    assert received == [(doc, blob)]
    assert type(received[0][0]) is dict and type(received[0][1]) is bytes
    tripwire.assert_untouched()


def test_a_dry_run_decodes_hostile_data_without_running_or_importing_anything(
    bf: Bitfab, store: Store, tripwire: Tripwire
) -> None:
    """D10: ``dry_run=True`` reports the bad item and the good one as ``valid``, calling nothing."""
    app = App(bf)
    bad = forge(
        newest_root(store, "handle"),
        span_data=_call({"x": 1}, _tagged("py:dataclass", {"class": f"{SENTINEL_MODULE}:Boom"})),
    )
    store.write([bad])

    result = app.handle.replay(dry_run=True)

    assert [i.verdict for i in result] == ["not_replayable", "valid"]
    assert app.handled == [] and app.llm_calls == []
    tripwire.assert_untouched()
