"""Bad inputs at the decorator (RELIABILITY.md C1-C9, C13-C15): the call always works, and the
span says what could not be recorded exactly. The codec's own tests go deeper into each value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from tracing_helpers import data, flushed, links, uid

from bitfab import Bitfab, ConfigError, ExportStats, NoopSpan
from bitfab.store import open_store
from bitfab.testing import FakeClock, MemorySink, SequentialIds

MODULE = "test_tracing_inputs"


def _record(name: str, input_: Any, output: Any = None, **extra: Any) -> dict[str, Any]:
    """The expected ``span_data`` (no runtime) of a call of ``name``."""
    recorded = {"name": name, "type": "function", "function_name": name, "input": input_}
    if output is not None:
        recorded["output"] = output
    recorded.update(extra)
    recorded.setdefault("replayable", True)
    return recorded


def _placeholder(type_name: str) -> list[Any]:
    return [["custom", "bitfab:unserializable", {"type": type_name}]]


@pytest.fixture
def accept(bf: Bitfab) -> Any:
    """A traced ``accept(*args, **kwargs)`` that returns how many arguments it got."""

    @bf.trace(key="accept")
    def accept(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    return accept


def test_unserializable_arguments_become_placeholders(
    bf: Bitfab, sink: MemorySink, accept: Any, tmp_path: Path
) -> None:
    """Locks, sockets, files, lambdas, modules and threads: the call works, the span is not replayable (C1)."""
    with socket.socket() as sock, open(tmp_path / "f.txt", "w") as handle:
        args = (threading.Lock(), sock, handle, lambda: 1, json, threading.Thread(target=print))
        assert accept(*args) == 6
    names = [
        "_thread.lock",
        "socket.socket",
        "_io.TextIOWrapper",
        "builtins.function",
        "builtins.module",
        "threading.Thread",
    ]
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "accept",
            [f"<unserializable: {name}>" for name in names],
            6,
            input_meta={"v": 1, "values": {str(i): _placeholder(n) for i, n in enumerate(names)}},
            replayable=False,
            not_replayable=[f"unserializable {name} at $[{i}]" for i, name in enumerate(names)],
        )
    ]


@dataclasses.dataclass
class Ticket:
    """A dataclass argument."""

    title: str
    opened: dt.datetime


def test_rich_types_are_tagged_and_stay_replayable(
    bf: Bitfab, sink: MemorySink, accept: Any
) -> None:
    """A dataclass, a datetime, a tuple and a date keyword are recorded with their sidecar tags (C2)."""
    ticket = Ticket("t", dt.datetime(2026, 1, 2, 3, 4, 5))
    assert accept(ticket, (1, 2), when=dt.date(2026, 1, 1)) == 3
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "accept",
            [{"title": "t", "opened": "2026-01-02T03:04:05"}, [1, 2], {"when": "2026-01-01"}],
            3,
            input_meta={
                "v": 1,
                "kwarg_names": ["when"],
                "values": {
                    "0": [
                        ["custom", "py:dataclass", {"class": f"{MODULE}:Ticket"}],
                        {"opened": [["custom", "py:datetime"]]},
                    ],
                    "1": [["custom", "py:tuple"]],
                    "2.when": [["custom", "py:date"]],
                },
            },
        )
    ]


class Hostile(Exception):
    """Raised by the hostile objects below."""


class BoomBase(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


class BadRepr:
    def __repr__(self) -> str:
        raise KeyboardInterrupt  # the codec never calls repr(), so this never fires

    def __str__(self) -> str:
        raise KeyboardInterrupt


class BadGetattr:
    def __getattr__(self, name: str) -> Any:
        raise Hostile(name)


class BadMapping(Mapping[str, Any]):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise self.error

    def __iter__(self) -> Iterator[str]:
        raise self.error

    def __len__(self) -> int:
        raise self.error


def test_objects_that_raise_when_inspected_become_placeholders(
    bf: Bitfab, sink: MemorySink, accept: Any
) -> None:
    """Arguments whose repr, getattr, iter or len raise (even a BaseException) never break the call (C3)."""
    args = (BadRepr(), BadGetattr(), BadMapping(Hostile("x")), BadMapping(BoomBase("y")))
    assert accept(*args) == 4
    recorded = data(flushed(bf, sink)[0])
    assert (recorded["input"], recorded["not_replayable"]) == (
        [
            f"<unserializable: {MODULE}.BadRepr>",
            f"<unserializable: {MODULE}.BadGetattr>",
            f"<unserializable: {MODULE}.BadMapping>",
            f"<unserializable: {MODULE}.BadMapping>",
        ],
        [
            f"unserializable {MODULE}.BadRepr at $[0]",
            f"unserializable {MODULE}.BadGetattr at $[1]",
            f"unserializable {MODULE}.BadMapping at $[2] ({MODULE}.Hostile raised)",
            f"unserializable {MODULE}.BadMapping at $[3] ({MODULE}.BoomBase raised)",
        ],
    )


@pytest.mark.parametrize("error", [Hostile("probe"), BoomBase("probe")], ids=["exception", "base"])
def test_return_value_that_raises_when_probed_is_returned_untouched(
    bf: Bitfab, sink: MemorySink, error: BaseException
) -> None:
    """A returned object whose ``__getattr__`` raises reaches the caller; bitfab's probes swallow it."""

    class Probed:
        def __getattr__(self, name: str) -> Any:
            raise error

    result = Probed()

    @bf.trace(key="probed")
    def probed() -> Probed:
        return result

    assert probed() is result
    recorded = data(flushed(bf, sink)[0])
    assert recorded["output"] == f"<unserializable: {MODULE}.{Probed.__qualname__}>"


def test_keyboard_interrupt_from_an_argument_propagates_and_leaves_no_span(
    bf: Bitfab, sink: MemorySink, accept: Any
) -> None:
    """A KeyboardInterrupt raised while reading an argument propagates; no span is left open (C3)."""
    before = otel_context.get_current()
    with pytest.raises(KeyboardInterrupt):
        accept(BadMapping(KeyboardInterrupt()))
    assert otel_context.get_current() is before
    assert accept(1) == 1
    assert links(flushed(bf, sink)) == [("accept", 2, None, 2)]


@pytest.mark.timeout(30)
def test_cycles_and_deep_nesting_get_markers(bf: Bitfab, sink: MemorySink, accept: Any) -> None:
    """Self-containing lists, dict cycles and 10 000 levels of nesting are cut with markers (C4, C5)."""
    loop: list[Any] = [1]
    loop.append(loop)
    ring: dict[str, Any] = {"a": {}}
    ring["a"]["back"] = ring
    deep: list[Any] = []
    cursor = deep
    for _ in range(10_000):
        cursor.append([])
        cursor = cursor[0]
    assert accept(loop, ring) == 2
    assert accept(deep) == 1
    cycles, depth = (data(record) for record in flushed(bf, sink))
    assert cycles == _record(
        "accept",
        [[1, "<cycle>"], {"a": {"back": "<cycle>"}}],
        2,
        input_meta={
            "v": 1,
            "values": {
                "0.1": [["custom", "bitfab:cycle"]],
                "1.a.back": [["custom", "bitfab:cycle"]],
            },
        },
        replayable=False,
        not_replayable=["cycle at $[0][1]", "cycle at $[1].a.back"],
    )
    nested: Any = "<max depth>"
    for _ in range(32):
        nested = [nested]
    assert depth == _record(
        "accept",
        [nested],
        1,
        input_meta={"v": 1, "values": {".".join(["0"] * 33): [["custom", "bitfab:depth"]]}},
        replayable=False,
        not_replayable=["max depth at $" + "[0]" * 33],
    )


def test_huge_values_are_truncated_within_the_span_budget(bf: Bitfab, sink: MemorySink) -> None:
    """A 10 MB string in and out is cut to the field cap with its original size noted (C6)."""
    big = "x" * 10_000_000

    @bf.trace(key="echo")
    def echo(text: str) -> str:
        return text

    assert echo(big) is big
    recorded = data(flushed(bf, sink)[0])
    sizes = {field: len(json.dumps(recorded.pop(field))) for field in ("input", "output")}
    assert sizes == {"input": bf.config.max_field_bytes - 1, "output": bf.config.max_field_bytes}
    assert recorded == {
        "name": "echo",
        "type": "function",
        "function_name": "echo",
        "input_meta": {
            "v": 1,
            "values": {"0": [["custom", "bitfab:truncated", {"size": 10_000_000, "kind": "str"}]]},
        },
        "output_meta": {
            "v": 1,
            "values": [["custom", "bitfab:truncated", {"size": 10_000_000, "kind": "str"}]],
        },
        "output_problems": ["truncated str at $"],
        "replayable": False,
        "not_replayable": ["truncated str at $[0]"],
    }
    assert len(json.dumps(sink.spans[0])) < bf.config.max_span_bytes


def test_arguments_are_snapshotted_at_entry_and_output_at_return(
    bf: Bitfab, sink: MemorySink
) -> None:
    """Mutations during the call (C8) and after it (C7) do not change what was recorded."""

    @bf.trace(key="grow")
    def grow(items: list[int], meta: dict[str, Any]) -> list[int]:
        items.append(3)
        meta["seen"] = True
        return items

    items, meta = [1, 2], {"n": 1}
    result = grow(items, meta)
    result.append(4)
    meta["after"] = True
    assert [data(record) for record in flushed(bf, sink)] == [
        _record("grow", [[1, 2], {"n": 1}], [1, 2, 3])
    ]


def test_generator_argument_is_not_consumed(bf: Bitfab, sink: MemorySink) -> None:
    """A generator or iterator argument reaches the function whole and is recorded as a marker (C9)."""

    @bf.trace(key="total")
    def total(numbers: Iterator[int]) -> int:
        return sum(numbers)

    assert total(n for n in range(4)) == 6
    assert total(iter([5, 6])) == 11
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "total",
            [f"<generator: builtins.{kind}>"],
            result,
            input_meta={
                "v": 1,
                "values": {"0": [["custom", "bitfab:generator", {"type": f"builtins.{kind}"}]]},
            },
            replayable=False,
            not_replayable=[f"generator builtins.{kind} at $[0] (not consumed)"],
        )
        for kind, result in (("generator", 6), ("list_iterator", 11))
    ]


# -- secrets (C13) -------------------------------------------------------------------------------

REDACTED = [["custom", "bitfab:redacted"]]
SECRET_KEY = "sk-" + "a1b2c3d4" * 4


def test_secret_names_and_values_are_redacted_before_export(bf: Bitfab, sink: MemorySink) -> None:
    """``api_key=``, a positional ``password``, auth headers and ``sk-`` strings are redacted."""

    @bf.trace(key="login")
    def login(user: str, password: str, headers: dict[str, str], *, api_key: str) -> dict[str, Any]:
        return {"token": "t-1", "echo": SECRET_KEY, "user": user}

    headers = {"Authorization": "Bearer abc", "Cookie": "c=1", "Accept": "json"}
    assert login("bob", "hunter2", headers, api_key="k-123") == {
        "token": "t-1",
        "echo": SECRET_KEY,
        "user": "bob",
    }
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "login",
            [
                "bob",
                "[REDACTED]",
                {"Authorization": "[REDACTED]", "Cookie": "[REDACTED]", "Accept": "json"},
                {"api_key": "[REDACTED]"},
            ],
            {"token": "[REDACTED]", "echo": "[REDACTED]", "user": "bob"},
            input_meta={
                "v": 1,
                "kwarg_names": ["api_key"],
                "values": {
                    "1": REDACTED,
                    "2.Authorization": REDACTED,
                    "2.Cookie": REDACTED,
                    "3.api_key": REDACTED,
                },
            },
            output_meta={"v": 1, "values": {"token": REDACTED, "echo": REDACTED}},
            output_problems=["redacted at $.token", "redacted at $.echo"],
            replayable=False,
            not_replayable=[
                "redacted at $[1]",
                "redacted at $[2].Authorization",
                "redacted at $[2].Cookie",
                "redacted at $[3].api_key",
            ],
        )
    ]
    assert "hunter2" not in json.dumps(sink.spans) and SECRET_KEY not in json.dumps(sink.spans)


class Account:
    """Methods of every binding that take a positional ``password``."""

    def method(self, user: str, password: str) -> str:
        return user

    @classmethod
    def cmethod(cls, user: str, password: str) -> str:
        return user

    @staticmethod
    def smethod(user: str, password: str) -> str:
        return user


def _login(user: str, password: str) -> str:
    return user


def test_positional_secret_is_redacted_at_its_position_in_every_binding(
    bf: Bitfab, sink: MemorySink
) -> None:
    """``password`` passed by position is redacted whether the function is bound, unbound or partial."""
    raw = Account.__dict__
    traced = type(
        "Account",
        (),
        {
            "method": bf.trace(key="pw-method")(raw["method"]),
            "cmethod": bf.trace(key="pw-cmethod")(raw["cmethod"]),
            "cmethod_below": classmethod(bf.trace(key="pw-cmethod-below")(raw["cmethod"].__func__)),
            "smethod": bf.trace(key="pw-smethod")(raw["smethod"]),
            "smethod_below": staticmethod(
                bf.trace(key="pw-smethod-below")(raw["smethod"].__func__)
            ),
        },
    )
    account = traced()
    partial_login = bf.trace(key="pw-partial")(functools.partial(_login, "bob"))
    calls = [
        account.method("bob", "hunter2"),
        traced.method(account, "bob", "hunter2"),
        traced.cmethod("bob", "hunter2"),
        account.cmethod_below("bob", "hunter2"),
        traced.smethod("bob", "hunter2"),
        account.smethod_below("bob", "hunter2"),
        partial_login("hunter2"),
    ]
    assert calls == ["bob"] * 7
    assert [
        (record["traceFunctionKey"], data(record)["input"]) for record in flushed(bf, sink)
    ] == [
        ("pw-method", ["bob", "[REDACTED]"]),
        ("pw-method", ["bob", "[REDACTED]"]),
        ("pw-cmethod", ["bob", "[REDACTED]"]),
        ("pw-cmethod-below", ["bob", "[REDACTED]"]),
        ("pw-smethod", ["bob", "[REDACTED]"]),
        ("pw-smethod-below", ["bob", "[REDACTED]"]),
        ("pw-partial", ["[REDACTED]"]),
    ]
    assert "hunter2" not in json.dumps(sink.spans)


def test_extra_redact_names_from_the_decorator_and_the_config(
    sink: MemorySink, make_bitfab: Callable[..., Bitfab]
) -> None:
    """``redact=["ssn"]`` on the decorator and ``Bitfab(redact=[...])`` add names to redact."""
    bf = make_bitfab(
        sink=sink, id_generator=SequentialIds(), clock=FakeClock(), redact=["card_number"]
    )

    @bf.trace(key="apply", redact=["ssn"])
    def apply(name: str, ssn: str, extra: dict[str, str]) -> str:
        return "ok"

    assert apply("ann", "123-45-6789", {"SSN": "1", "cardNumber": "4111", "zip": "1"}) == "ok"
    assert data(flushed(bf, sink)[0])["input"] == [
        "ann",
        "[REDACTED]",
        {"SSN": "[REDACTED]", "cardNumber": "[REDACTED]", "zip": "1"},
    ]


def test_redact_hook_rewrites_input_and_output(bf: Bitfab, sink: MemorySink) -> None:
    """A ``redact=hook`` sees the readable input and output; what it changes is recorded as changed."""
    seen: list[tuple[str, Any]] = []

    def mask_emails(field: str, value: Any) -> Any:
        seen.append((field, value))
        return json.loads(json.dumps(value).replace("ann@example.com", "<email>"))

    @bf.trace(key="notify", redact=mask_emails)
    def notify(to: str, body: str) -> dict[str, str]:
        return {"sent_to": to}

    assert notify("ann@example.com", "hi") == {"sent_to": "ann@example.com"}
    assert seen == [
        ("input", ["ann@example.com", "hi"]),
        ("output", {"sent_to": "ann@example.com"}),
    ]
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "notify",
            ["<email>", "hi"],
            {"sent_to": "<email>"},
            output_problems=["output changed by the redact hook"],
            replayable=False,
            not_replayable=["input changed by the redact hook"],
        )
    ]


def test_redact_hook_that_raises_drops_the_content_and_the_call_goes_on(
    bf: Bitfab, sink: MemorySink
) -> None:
    """If the hook raises, input and output are dropped (fail closed) and the call still returns."""

    def broken(field: str, value: Any) -> Any:
        raise RuntimeError("hook bug")

    @bf.trace(key="guarded", redact=broken)
    def guarded(secret_ish: str) -> str:
        return "result " + secret_ish

    assert guarded("x-private") == "result x-private"
    assert [data(record) for record in flushed(bf, sink)] == [
        _record(
            "guarded",
            "<dropped: redact hook failed>",
            "<dropped: redact hook failed>",
            output_problems=["redact hook failed"],
            replayable=False,
            not_replayable=["redact hook failed"],
        )
    ]
    assert "x-private" not in json.dumps(sink.spans)


def test_span_metadata_and_contexts_are_redacted_too(bf: Bitfab, sink: MemorySink) -> None:
    """Secrets given to ``add_context`` / ``set_metadata`` are redacted like inputs and outputs."""

    @bf.trace(key="annotated")
    def annotated() -> None:
        span = bf.current_span()
        span.add_context({"authorization": "Bearer abc", "doc": "d"})
        span.set_metadata(api_key="k-123", user="u1", echo=SECRET_KEY)

    annotated()
    recorded = data(flushed(bf, sink)[0])
    assert (recorded["contexts"], recorded["metadata"]) == (
        [{"authorization": "[REDACTED]", "doc": "d"}],
        {"api_key": "[REDACTED]", "user": "u1", "echo": "[REDACTED]"},
    )


# -- invalid text (C14) --------------------------------------------------------------------------


def test_invalid_text_is_recorded_and_stored(
    tmp_path: Path, make_bitfab: Callable[..., Bitfab]
) -> None:
    """Lone surrogates, NUL and invalid UTF-8 bytes are recorded and read back from SQLite as given."""
    path = str(tmp_path / "text.db")
    bf = make_bitfab(db=path, id_generator=SequentialIds(), clock=FakeClock())

    @bf.trace(key="text")
    def text(a: str, b: bytes, c: str) -> str:
        return a + c

    assert text("x\ud800y", b"\xff\xfe", "n\x00ul") == "x\ud800yn\x00ul"
    assert bf.flush(timeout=10)
    bf.shutdown()
    store = open_store(path)
    try:
        [stored] = store.trace_spans(uid(1))
    finally:
        store.close()
    assert data(stored) == _record(
        "text",
        ["x\ud800y", "fffe", "n\x00ul"],
        "x\ud800yn\x00ul",
        input_meta={"v": 1, "values": {"1": [["custom", "py:bytes", {"encoding": "hex"}]]}},
    )


# -- disabled and misconfigured (C15) --------------------------------------------------------------


@pytest.mark.parametrize("how", ["env", "code"])
def test_disabled_tracing_is_a_pass_through(
    monkeypatch: pytest.MonkeyPatch, sink: MemorySink, how: str
) -> None:
    """``BITFAB_ENABLED=0`` or ``enabled=False``: calls run as before; nothing is recorded or started."""
    if how == "env":
        monkeypatch.setenv("BITFAB_ENABLED", "0")
        bf = Bitfab(sink=sink)
    else:
        bf = Bitfab(sink=sink, enabled=False)
    threads = threading.active_count()
    result = object()
    spans_inside = []

    @bf.trace(key="off")
    def off(x: int) -> object:
        spans_inside.append(bf.current_span())
        return result

    @bf.trace(key="off-gen")
    def off_gen() -> Iterator[int]:
        yield 1

    assert [off(1), off(2), list(off_gen())] == [result, result, [1]]
    assert [type(span) for span in spans_inside] == [NoopSpan, NoopSpan]
    assert bf.flush() is True
    assert (sink.spans, bf.stats(), threading.active_count()) == (
        [],
        ExportStats(emitted=0, exported=0, queued=0, in_flight=0),
        threads,
    )


@pytest.mark.parametrize(
    ("name", "value", "setting", "default"),
    [
        ("BITFAB_MAX_QUEUE_SIZE", "abc", "max_queue_size", 50_000),
        ("BITFAB_ENABLED", "maybe", "enabled", True),
        ("BITFAB_SCHEDULE_DELAY", "-1", "schedule_delay", 0.5),
    ],
)
def test_bad_environment_value_warns_once_and_keeps_the_default(
    make_bitfab: Callable[..., Bitfab],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sink: MemorySink,
    name: str,
    value: str,
    setting: str,
    default: Any,
) -> None:
    """A bad ``BITFAB_*`` value logs one warning naming it and the default; calls are still recorded."""
    monkeypatch.setenv(name, value)
    bf = make_bitfab(sink=sink)

    @bf.trace(key="env")
    def env(x: int) -> int:
        return x

    with caplog.at_level(logging.WARNING, logger="bitfab"):
        assert [env(1), env(2)] == [1, 2]
        assert len(flushed(bf, sink)) == 2
    assert [(r.levelname, name in r.getMessage()) for r in caplog.records] == [("WARNING", True)]
    assert getattr(bf.config, setting) == default


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_queue_size": "abc"}, "invalid value for max_queue_size: 'abc'"),
        ({"max_queue_size": 0}, "invalid value for max_queue_size: 0"),
        ({"enabled": "sometimes"}, "invalid value for enabled: 'sometimes'"),
        ({"max_queue": 10}, "unknown setting 'max_queue'; known settings: "),
    ],
)
def test_bad_value_in_code_is_a_config_error(settings: dict[str, Any], message: str) -> None:
    """A bad setting given in code raises ConfigError at once, from ``Bitfab()`` and ``configure()``."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Bitfab(sink=MemorySink(), **settings)
    bf = Bitfab(sink=MemorySink())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        bf.configure(**settings)
