"""The embedded mode on PostgreSQL: `BITFAB_DB=postgresql://...` records and replays there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from cli_helpers import run
from e2e_helpers import child_env

SCRIPT = textwrap.dedent(
    """
    import bitfab

    @bitfab.trace(key="pg.embedded")
    def double(n: int) -> int:
        return 2 * n

    for n in range(5):
        double(n)
    assert bitfab.flush(10)
    print(bitfab.stats().exported)
    """
)


def test_bitfab_db_postgres_url_records_into_postgres(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The URL is used as a URL (no directory named `postgresql:` appears in the cwd), the rows
    are in the schema, and the CLI reads them with the same variable."""
    (tmp_path / "app.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=child_env({"BITFAB_DB": pg_url}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    assert sorted(os.listdir(tmp_path)) == ["app.py"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spans WHERE key = 'pg.embedded'").fetchone() == (
            5,
        )
    status, out, err = run(capsys, "traces", "pg.embedded", "--db", pg_url)
    assert (status, err) == (0, "") and len(out.splitlines()) == 6
