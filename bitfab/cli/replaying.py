"""``bitfab replay`` and ``bitfab demo``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from bitfab.cli._common import (
    CliError,
    _clip,
    _require_store,
)
from bitfab.exceptions import BitfabError
from bitfab.playback.result import VERDICTS


def _import_all(modules: Sequence[str]) -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's modules in cwd
    for name in modules:
        _import(name)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import module {name!r}: no such module (run from the project's"
                " directory or set PYTHONPATH)"
            ) from None
        raise CliError(f"cannot import module {name!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing: say so in one line
        raise CliError(
            f"importing module {name!r} failed: {type(exc).__name__}: {_clip(str(exc), 200)}"
        ) from None


def _resolve_target(target: str, imports: Sequence[str]) -> Any:
    import bitfab

    _import_all(imports)
    if ":" in target:
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise CliError(f"TARGET {target!r} is not module:function or a key")
        obj: Any = _import(module_name)
        for part in attr.split("."):
            if isinstance(obj, type):
                raise CliError(
                    f"{target} is a method: replaying it needs an instance, which the command"
                    f" line cannot make; call `{obj.__name__}(...).{part}.replay()` from Python"
                )
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CliError(f"module {module_name!r} has no {attr!r}") from None
        if not isinstance(obj, bitfab.TracedFunction):
            raise CliError(f"{target} is not a @bitfab.trace function, so it has no recordings")
        return obj
    matches = [info for info in bitfab.functions() if info.key == target]
    if not matches:
        known = ", ".join(sorted({info.key for info in bitfab.functions()})[:10])
        hint = (
            f"keys of the imported modules: {known}"
            if known
            else "name the module that defines it with --import MODULE"
        )
        raise CliError(f"no @bitfab.trace function with key {target!r}; {hint}")
    return matches[0].traced


class _Progress:
    """The replay's progress on stderr.

    On a terminal: one line redrawn in place, a bar with the verdicts so far
    (``[#########.........] 18/36  same 14 · changed 3 · fixed 1``). Elsewhere (CI logs): a
    line at each tenth of the way and at the end, so a long replay doesn't flood the log.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO, *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.counts: dict[str, int] = {}
        self.shown_tenth = -1
        self.drawn = False

    def __call__(self, done: int, total: int, item: Any) -> None:
        verdict = str(getattr(item, "verdict", "?"))
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        tally = " · ".join(f"{name} {n}" for name, n in sorted(self.counts.items()))
        if self.interactive:
            filled = self.WIDTH * done // max(total, 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"[{bar}] {done}/{total}  {tally}"
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self.drawn = True
            return
        tenth = 10 * done // max(total, 1)
        if tenth > self.shown_tenth or done == total:
            self.shown_tenth = tenth
            self.stream.write(f"replayed {done}/{total}: {tally}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.interactive and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _fail_on(text: str) -> set[str]:
    verdicts = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(verdicts - set(VERDICTS))
    if unknown:
        raise CliError(
            f"--fail-on: unknown verdict {unknown[0]!r}; choose from {', '.join(VERDICTS)}", 2
        )
    return verdicts


def _replay(args: argparse.Namespace) -> int:
    import bitfab

    fail_on = _fail_on(args.fail_on)
    if args.db:
        bitfab.configure(db=args.db)
    fn = _resolve_target(args.target, args.imports)
    db = args.db or bitfab.default_instance().config.db_path()
    if not bitfab.default_instance().config.url:
        _require_store(db, "record calls first (try `bitfab demo`) or pass --db PATH")
    progress = _Progress(sys.stderr, interactive=sys.stderr.isatty())

    try:
        result = fn.replay(
            limit=args.limit,
            trace_ids=args.trace_ids,
            max_concurrency=args.concurrency,
            mock=args.mock,
            on_progress=progress,
        )
    except BitfabError as exc:
        raise CliError(_clip(str(exc), 300)) from None
    finally:
        progress.close()
        bitfab.flush()
    if not result.items:
        raise CliError((result.message or f"no recorded calls of key {result.key!r}") + f" in {db}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print(result)
    failing = [item for item in result.items if item.verdict in fail_on]
    if failing:
        print(
            f"bitfab: {len(failing)} of {len(result.items)} calls are"
            f" {'/'.join(sorted({item.verdict for item in failing}))} (--fail-on"
            f" {','.join(sorted(fail_on))})",
            file=sys.stderr,
        )
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bitfab import demo

    if args.dir is not None and os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise CliError(f"--dir {args.dir} exists and is not a directory")
    try:
        demo.run(args.dir)
    except OSError as exc:
        raise CliError(f"cannot write the demo store: {exc.strerror or exc}") from None
    return 0
