"""A fresh PostgreSQL schema per test, for every suite that needs the PostgreSQL store.

The database comes from ``BITFAB_TEST_PG`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``;
``scripts/test`` sets it). It is read when this module is imported, because
``tests/conftest.py`` removes every ``BITFAB_*`` variable while each test runs. Without it,
:data:`PG_URL` is None and the PostgreSQL tests skip with :data:`SKIP_REASON`.

Usage, from any suite (``tests/`` is on ``sys.path``; from a subfolder without an
``__init__.py`` insert it first, as ``tests/scale/conftest.py`` does)::

    from pg import PG_URL, SKIP_REASON, fresh_schema_url

    pytestmark = pytest.mark.skipif(PG_URL is None, reason=SKIP_REASON)

    def test_something() -> None:
        with fresh_schema_url() as url:
            store = open_store(url)  # the URL's search_path names the new schema
            ...

Each schema is new and empty (``bitfab_test_<random>``), so tests can run in parallel and
leave nothing behind: it is dropped, with everything in it, when the block ends. Creating one
is a single ``CREATE SCHEMA``: far cheaper than a database per test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["PG_URL", "SKIP_REASON", "fresh_schema", "fresh_schema_url", "schema_url"]

PG_URL: str | None = os.environ.get("BITFAB_TEST_PG") or None
"""The test database's URL, or None when the PostgreSQL tests are off."""

SKIP_REASON = (
    "PostgreSQL tests are off: set BITFAB_TEST_PG=postgresql://postgres@127.0.0.1:5432/test"
    " (a database you can create schemas in) or run scripts/test"
)


def schema_url(url: str, schema: str, *settings: str) -> str:
    """``url`` with ``options=-csearch_path=<schema>`` (replacing any options it had), plus
    other ``-c`` settings given as ``"name=value"``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    options = " ".join(f"-c{setting}" for setting in (f"search_path={schema}", *settings))
    query.append(("options", options))
    # quote, not quote_plus: libpq reads %20 as a space but "+" as a plus.
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@contextlib.contextmanager
def fresh_schema() -> Iterator[tuple[str, str]]:
    """A new, empty schema: ``(url, schema)``, the URL's search_path set to it; dropped after.

    Raises ``RuntimeError`` if ``BITFAB_TEST_PG`` is not set (skip such tests first).
    """
    import psycopg  # only where PostgreSQL tests run
    from psycopg import sql

    if PG_URL is None:
        raise RuntimeError(SKIP_REASON)
    schema = "bitfab_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema_url(PG_URL, schema), schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def fresh_schema_url() -> Iterator[str]:
    """The URL of a new, empty schema (see :func:`fresh_schema`), dropped after the block."""
    with fresh_schema() as (url, _):
        yield url


def catalog(schema: str) -> list[tuple[object, ...]]:
    """Every table, index and column of ``schema`` with its type or definition, for tests that
    check a hostile input changed nothing in the schema (RELIABILITY.md E7)."""
    import psycopg

    if PG_URL is None:
        raise RuntimeError(SKIP_REASON)
    with psycopg.connect(PG_URL) as conn:
        return conn.execute(
            """
            SELECT c.relkind::text, c.relname::text, a.attname::text,
                   pg_catalog.format_type(a.atttypid, a.atttypmod),
                   pg_catalog.pg_get_indexdef(c.oid)
            FROM pg_catalog.pg_class AS c
            JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            LEFT JOIN pg_catalog.pg_attribute AS a
                ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE n.nspname = %s
            ORDER BY c.relname, a.attnum
            """,
            (schema,),
        ).fetchall()
