"""Swagger UI in a real headless browser: "Try it out" with a file upload.

Needs Debian's ``chromium`` and the ``playwright`` package (the ``e2e``
extra; ``.ci/run`` installs both). Without them the test is skipped and says
so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.servers import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.async_api", reason="playwright missing")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def test_try_it_out_uploads_a_file(demo_server: Server, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"deepserve in a browser\n" * 100)
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda req: errors.append(f"failed: {req.url}"))
            await page.goto(demo_server.base + "/api")
            op = page.locator("div.opblock-post").filter(
                has_text="/v2/models/demo/predict/"
            )
            await op.locator(".opblock-summary").click()
            # Every argument is documented.
            for text in ("Text to describe.", "Optional file to describe."):
                await op.get_by_text(text).wait_for()
            await op.locator("button.try-out__btn").click()
            await op.locator("input[type=file]").set_input_files(str(upload))
            await op.locator("button.execute").click()
            body = op.locator(".live-responses-table .response-col_description pre")
            await body.first.wait_for(timeout=20_000)
            result = json.loads(await body.first.inner_text())
        finally:
            await browser.close()
    assert errors == []
    file_info = result["predictions"]["file"]
    assert file_info["original_filename"] == "notes.txt"
    assert file_info["size"] == upload.stat().st_size
    assert file_info["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
