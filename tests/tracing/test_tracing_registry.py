"""The registry of traced functions, the ``bitfab_capture`` fixture, and the public façade."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bitfab
from bitfab import Bitfab, FunctionInfo, RegistryError
from bitfab.testing import Capture

MODULE_SOURCE = """\
import functools

import bitfab
from bitfab.testing import MemorySink

bf = bitfab.Bitfab(sink=MemorySink())


@bf.trace(key="reg-plain", span_type="agent", mock_on_replay=True)
def plain(x: int, *, y: str = "a") -> str:
    return y * x


@bf.trace(key="reg-async", name="Fetch")
async def fetch(url):
    return url


@bf.trace(key="reg-gen")
def numbers(n):
    yield from range(n)


@bf.trace(key="reg-agen", span_type="llm")
async def stream(n):
    yield n


class Service:
    @bf.trace(key="reg-method")
    def handle(self, request):
        return request

    @bf.trace(key="reg-classmethod")
    @classmethod
    def build(cls):
        return cls()
"""

EXTRA_SOURCE = """

def power(base, exp):
    return base**exp


square_of_two = bf.trace(key="reg-partial")(functools.partial(power, 2))


class Doubler:
    def __call__(self, x):
        return 2 * x


double = bf.trace(key="reg-callable")(Doubler())
"""


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write a module under ``tmp_path``, importable by name; forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        names.append(name)
        importlib.invalidate_caches()
        return path

    yield write
    for name in names:
        sys.modules.pop(name, None)


def _line(source: str, text: str) -> int:
    """The 1-based number of the first line of ``source`` that contains ``text``."""
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


def _info(module: str, file: Path, **fields: Any) -> FunctionInfo:
    defaults = {"span_type": "function", "mock_on_replay": False, "kind": "function"}
    return FunctionInfo(module=module, file=str(file), **{**defaults, **fields})


def test_functions_lists_every_traced_function_with_its_declaration(write_module: Any) -> None:
    """``functions()`` gives key, name, qualname, module, file, line, signature and options."""
    path = write_module("bf_registry_listing", MODULE_SOURCE)
    module = importlib.import_module("bf_registry_listing")
    entries = module.bf.functions()
    expected = [
        _info(
            "bf_registry_listing",
            path,
            key="reg-agen",
            name="stream",
            qualname="stream",
            line=_line(MODULE_SOURCE, 'key="reg-agen"'),
            signature="(n)",
            span_type="llm",
            kind="async_generator",
        ),
        _info(
            "bf_registry_listing",
            path,
            key="reg-async",
            name="Fetch",
            qualname="fetch",
            line=_line(MODULE_SOURCE, 'key="reg-async"'),
            signature="(url)",
            kind="async",
        ),
        _info(
            "bf_registry_listing",
            path,
            key="reg-classmethod",
            name="build",
            qualname="Service.build",
            line=_line(MODULE_SOURCE, 'key="reg-classmethod"'),
            signature="(cls)",
        ),
        _info(
            "bf_registry_listing",
            path,
            key="reg-gen",
            name="numbers",
            qualname="numbers",
            line=_line(MODULE_SOURCE, 'key="reg-gen"'),
            signature="(n)",
            kind="generator",
        ),
        _info(
            "bf_registry_listing",
            path,
            key="reg-method",
            name="handle",
            qualname="Service.handle",
            line=_line(MODULE_SOURCE, 'key="reg-method"'),
            signature="(self, request)",
        ),
        _info(
            "bf_registry_listing",
            path,
            key="reg-plain",
            name="plain",
            qualname="plain",
            line=_line(MODULE_SOURCE, 'key="reg-plain"'),
            signature="(x: int, *, y: str = 'a') -> str",
            span_type="agent",
            mock_on_replay=True,
        ),
    ]
    assert entries == expected
    assert [entry.to_dict() for entry in entries] == [
        {field: getattr(info, field) for field in info.to_dict()} for info in expected
    ]
    assert [entry.traced for entry in entries][-1] is module.plain


def test_two_functions_under_one_key_is_an_error_naming_both(bf: Bitfab) -> None:
    """A second, different function under a used key raises RegistryError naming both functions."""

    @bf.trace(key="shared-key")
    def first() -> None: ...

    def second() -> None: ...

    with pytest.raises(RegistryError) as caught:
        bf.trace(key="shared-key")(second)
    prefix = f"{__name__}.test_two_functions_under_one_key_is_an_error_naming_both.<locals>"
    line = first.__wrapped__.__code__.co_firstlineno
    assert (str(caught.value), caught.value.key) == (
        f"key 'shared-key' is already used by {prefix}.first ({__file__}:{line}); "
        f"{prefix}.second needs its own key",
        "shared-key",
    )
    assert [info.qualname.rsplit(".", 1)[-1] for info in bf.functions()] == ["first"]


def test_registries_are_per_instance(bf: Bitfab) -> None:
    """Functions traced by one instance are not listed by another (nor by the default one)."""
    bf.trace(key="only-in-bf")(len)
    assert [info.key for info in bf.functions()] == ["only-in-bf"]
    assert "only-in-bf" not in [info.key for info in bitfab.functions()]


def test_reloading_a_module_redecorates_its_functions(write_module: Any) -> None:
    """``importlib.reload`` re-decorates the same functions under their keys without an error."""
    path = write_module("bf_registry_reload", MODULE_SOURCE)
    module = importlib.import_module("bf_registry_reload")
    shared = module.bf
    sys.modules["bitfab_shared_for_reload"] = shared  # the reloaded module reuses this instance
    try:
        path.write_text(
            "\n\n"
            + MODULE_SOURCE.replace(
                "bf = bitfab.Bitfab(sink=MemorySink())",
                "import sys\nbf = sys.modules['bitfab_shared_for_reload']",
            )
        )
        importlib.reload(module)
    finally:
        del sys.modules["bitfab_shared_for_reload"]
    keys = ["reg-agen", "reg-async", "reg-classmethod", "reg-gen", "reg-method", "reg-plain"]
    assert [(info.key, info.line) for info in shared.functions()] == [
        (key, _line(MODULE_SOURCE, f'key="{key}"') + 3) for key in keys
    ]
    assert module.plain(2, y="b") == "bb"


def test_reloading_a_module_with_a_traced_partial_and_callable_object(write_module: Any) -> None:
    """A ``functools.partial`` or callable object traced at module level survives a reload too."""
    write_module("bf_registry_partial", MODULE_SOURCE + EXTRA_SOURCE)
    module = importlib.import_module("bf_registry_partial")
    shared = module.bf
    sys.modules["bitfab_shared_for_reload"] = shared
    try:
        Path(module.__file__).write_text(
            (MODULE_SOURCE + EXTRA_SOURCE).replace(
                "bf = bitfab.Bitfab(sink=MemorySink())",
                "import sys\nbf = sys.modules['bitfab_shared_for_reload']",
            )
        )
        importlib.reload(module)
    finally:
        del sys.modules["bitfab_shared_for_reload"]
    assert (module.square_of_two(5), module.double(4)) == (32, 8)
    entries = {info.key: info for info in shared.functions()}
    assert [
        (entries[key].module, entries[key].qualname) for key in ("reg-partial", "reg-callable")
    ] == [("bf_registry_partial", "power"), ("bf_registry_partial", "Doubler")]


# -- the bitfab_capture fixture --------------------------------------------------------------------


@bitfab.trace(key="capture-lookup")
def lookup(word: str) -> int:
    return len(word)


@bitfab.trace(key="capture-answer")
def answer(question: str) -> dict[str, int]:
    return {word: lookup(word) for word in question.split()}


def test_bitfab_capture_records_the_default_instance(bitfab_capture: Capture) -> None:
    """The ``bitfab_capture`` fixture collects spans of ``@bitfab.trace`` functions in memory."""
    assert answer("to be") == {"to": 2, "be": 2}
    assert [
        (record["traceFunctionKey"], record["rawSpan"]["span_data"]["input"])
        for record in bitfab_capture.spans
    ] == [("capture-lookup", ["to"]), ("capture-lookup", ["be"]), ("capture-answer", ["to be"])]
    assert bitfab_capture.tree() == [
        {
            "key": "capture-answer",
            "name": "answer",
            "input": ["to be"],
            "output": {"to": 2, "be": 2},
            "children": [
                {
                    "key": "capture-lookup",
                    "name": "lookup",
                    "input": [word],
                    "output": 2,
                    "children": [],
                }
                for word in ("to", "be")
            ],
        }
    ]
    assert [trace["expectedSpanCount"] for trace in bitfab_capture.traces] == [3]
    bitfab_capture.clear()
    assert (bitfab_capture.spans, bitfab_capture.traces) == ([], [])


def test_bitfab_capture_starts_empty_and_writes_no_database(
    bitfab_capture: Capture, tmp_path: Path
) -> None:
    """Each test's capture starts empty, and recording into it creates no ``.bitfab`` directory."""
    assert bitfab_capture.spans == []
    lookup("x")
    assert len(bitfab_capture.spans) == 1
    assert not (Path.cwd() / ".bitfab").exists()


def test_default_functions_list_module_level_traced_functions() -> None:
    """``bitfab.functions()`` lists the functions traced with ``@bitfab.trace`` in this module."""
    mine = [info for info in bitfab.functions() if info.key.startswith("capture-")]
    assert [(info.key, info.qualname, info.module) for info in mine] == [
        ("capture-answer", "answer", __name__),
        ("capture-lookup", "lookup", __name__),
    ]


# -- the façade ------------------------------------------------------------------------------------


def test_public_names_are_sorted_few_and_all_resolve() -> None:
    """``bitfab.__all__`` is sorted, holds 10-30 names, and each one exists."""
    names = bitfab.__all__
    assert (names == sorted(names), 10 <= len(names) <= 30, len(set(names)) == len(names)) == (
        True,
        True,
        True,
    )
    assert [name for name in names if not hasattr(bitfab, name)] == []


def test_module_functions_are_bound_to_the_default_instance() -> None:
    """``bitfab.trace``, ``flush``... are bound methods of ``bitfab.default_instance()``."""
    default = bitfab.default_instance()
    bound = ["trace", "configure", "flush", "shutdown", "stats", "functions", "current_span"]
    assert [getattr(bitfab, name).__self__ is default for name in bound] == [True] * len(bound)


IMPORT_PROBE = """
import json, os, threading
from pathlib import Path

def fds():
    return sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else []

original_start = threading.Thread.start
before = {"threads": threading.active_count(), "fds": fds()}
import bitfab

@bitfab.trace(key="probe")
def probe(x):
    return x

after_import = {
    "threads": threading.active_count(),
    "fds": fds(),
    "bitfab_dir": Path(".bitfab").exists(),
    "thread_start_patched": threading.Thread.start is not original_start,
}
probe(1)
bitfab.flush()
after_call = {
    "threads": threading.active_count(),
    "db": Path(".bitfab", "bitfab.db").exists(),
}
print(json.dumps({"before": before, "after_import": after_import, "after_call": after_call}))
"""


@pytest.mark.timeout(60)
def test_import_and_decoration_start_no_thread_and_open_no_file(tmp_path: Path) -> None:
    """``import bitfab`` and ``@bitfab.trace`` start no thread, open no file and patch nothing."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BITFAB_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(IMPORT_PROBE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["after_import"] == {
        "threads": report["before"]["threads"],
        "fds": report["before"]["fds"],
        "bitfab_dir": False,
        "thread_start_patched": False,
    }
    assert report["after_call"] == {"threads": report["before"]["threads"] + 1, "db": True}
