"""Running the `bitfab` command in-process."""

from __future__ import annotations

import pytest

from bitfab.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err
