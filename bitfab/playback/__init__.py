"""Replay recorded calls through the current code: ``fn.replay()`` / ``bitfab.replay(fn)``."""

from __future__ import annotations

from bitfab.playback.engine import run_areplay, run_replay

__all__ = ["run_areplay", "run_replay"]
