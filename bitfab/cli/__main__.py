"""``python -m bitfab.cli``: the ``bitfab`` command."""

from __future__ import annotations

from bitfab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
