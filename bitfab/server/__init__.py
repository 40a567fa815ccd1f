"""bitfab's server: the Bitfab SDK protocol and bitfab's read API over one store.

Needs the ``server`` extra (``pip install 'bitfab[server]'``). Start it with ``bitfab serve``,
or build the ASGI app yourself::

    from bitfab.server import create_app
    from bitfab.store import open_store

    app = create_app(open_store(".bitfab/bitfab.db"))
"""

from __future__ import annotations

from bitfab.exceptions import MissingExtraError

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingExtraError("server", "bitfab's server") from exc

from bitfab.server.app import create_app
from bitfab.server.body import Limits

__all__ = ["Limits", "create_app"]
