"""``bitfab replay`` and ``bitfab demo``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bitfab.cli._common import (
    _VERDICTS,
    CliError,
    _clip,
)
from bitfab.exceptions import BitfabError


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


def _fail_on(text: str) -> set[str]:
    verdicts = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(verdicts - set(_VERDICTS))
    if unknown:
        raise CliError(
            f"--fail-on: unknown verdict {unknown[0]!r}; choose from {', '.join(_VERDICTS)}", 2
        )
    return verdicts


def _replay(args: argparse.Namespace) -> int:
    import bitfab

    fail_on = _fail_on(args.fail_on)
    if args.db:
        bitfab.configure(db=args.db)
    fn = _resolve_target(args.target, args.imports)
    db = args.db or bitfab.default_instance().config.db_path()
    if not bitfab.default_instance().config.url and not os.path.isfile(db) and "://" not in db:
        raise CliError(
            f"no store at {db}; record calls first (try `bitfab demo`) or pass --db PATH"
        )
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int, item: Any) -> None:
        end = "" if interactive and done < total else "\n"
        lead = "\r" if interactive else ""
        print(
            f"{lead}replayed {done}/{total}: {item.verdict}", end=end, file=sys.stderr, flush=True
        )

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
