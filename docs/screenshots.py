"""Regenerate the web UI's screenshots in docs/img/ from the demo's data.

Usage (from the repository's root; needs Debian's chromium and the dev extra)::

    .venv/bin/python docs/screenshots.py

It records the demo into a temporary store (``bitfab demo --dir``), starts ``bitfab serve
--no-auth`` on a free loopback port, and drives chromium headless at 1400x900: ui-functions,
ui-traces, ui-trace, ui-runs and ui-run.png in the light theme, and ui-run-dark.png.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Page, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
READY = re.compile(r"bitfab server on http://127\.0\.0\.1:(\d+)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")}


def record_demo(directory: Path) -> Path:
    """Run ``bitfab demo`` into ``directory``, then replay once more (the recorded version,
    so that the runs list has two runs); the store's path."""
    db = directory / "bitfab.db"
    cli = [sys.executable, "-m", "bitfab.cli"]
    replay = [*cli, "replay", "bitfab.demo:triage", "--limit", "36", "--fail-on", ""]
    for command in ([*cli, "demo", "--dir", str(directory)], [*replay, "--db", str(db)]):
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
        )
    return db


@contextmanager
def serve(db: Path) -> Iterator[str]:
    """``bitfab serve --no-auth`` on a free port; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bitfab.cli", "serve", "--no-auth", "--port", "0", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    port: list[int] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            match = READY.search(line)
            if match and not port:
                port.append(int(match.group(1)))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(30):
            raise SystemExit("bitfab serve did not start")
        url = f"http://127.0.0.1:{port[0]}"
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def shoot_all(page: Page, url: str) -> None:
    """The five pages, light theme."""

    def save(name: str) -> None:
        page.wait_for_load_state("networkidle")
        path = OUT / f"ui-{name}.png"
        page.screenshot(path=str(path))
        print(f"wrote {path.relative_to(ROOT)}")

    page.goto(url + "/functions")
    save("functions")

    page.goto(url + "/traces?key=triage")
    save("traces")

    page.goto(url + "/runs")
    save("runs")
    page.locator(".runs-table tr", has_text="changed").locator("a.rowlink").click()
    page.wait_for_selector(".item[open] .jv")
    save("run")

    # The original trace of the first changed item, its LLM step selected.
    page.locator(".item[data-verdict='changed'] .links a", has_text="original").first.click()
    page.wait_for_selector(".span-detail")
    page.locator(".span-row", has_text="classify").first.click()
    page.wait_for_selector(".span-detail table.usage")
    save("trace")


def shoot_dark_run(page: Page, url: str) -> None:
    """The run page, dark theme."""
    page.goto(url + "/runs")
    page.locator(".runs-table tr", has_text="changed").locator("a.rowlink").click()
    page.wait_for_selector(".item[open] .jv")
    page.wait_for_load_state("networkidle")
    path = OUT / "ui-run-dark.png"
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bitfab-shots-") as tmp:
        db = record_demo(Path(tmp) / "demo")
        with serve(db) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                viewport: ViewportSize = {"width": 1400, "height": 900}
                shoot_all(browser.new_page(viewport=viewport, color_scheme="light"), url)
                shoot_dark_run(browser.new_page(viewport=viewport, color_scheme="dark"), url)
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
