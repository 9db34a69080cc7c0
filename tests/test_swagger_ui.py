"""Swagger UI in a real headless browser: "Try it out" with a file upload,
and the examples it shows: the demo's real answer, and each error's body.

Needs Debian's ``chromium`` and the ``playwright`` package (the ``e2e``
extra; ``.ci/run`` installs both). Without them the test is skipped and says
so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Server, get_json

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
    file_info = result["file"]
    assert file_info["original_filename"] == "notes.txt"
    assert file_info["size"] == upload.stat().st_size
    assert file_info["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()


def example(response: str) -> Any:
    """The example Swagger UI shows in a documented response's row."""
    return json.loads(response)


async def test_examples_are_real_answers(demo_server: Server, tmp_path: Path) -> None:
    """The 200 example of the demo's predict is what "Try it out" answers
    (the default text, ``upper``, a ``notes.txt``: the example's case), and
    every error response, a reference in the document, is shown with its
    own description and example body."""
    spec = get_json(demo_server.base + "/swagger.json")
    assert isinstance(spec, dict)
    predict = spec["paths"]["/v2/models/demo/predict/"]["post"]
    shared = spec["components"]["responses"]
    refs = {
        code: response["$ref"].rsplit("/", 1)[1]
        for code, response in predict["responses"].items()
        if code != "200"
    }
    assert refs and set(refs.values()) <= set(shared)
    upload = tmp_path / "notes.txt"
    upload.write_bytes(b"Hello, deepserve!\n")
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(demo_server.base + "/api")
            op = page.locator("div.opblock-post").filter(
                has_text="/v2/models/demo/predict/"
            )
            await op.locator(".opblock-summary").click()
            documented = op.locator("table.responses-table").first
            await documented.locator("tr.response").first.wait_for()
            shown: dict[str, tuple[str, str]] = {}
            for row in await documented.locator("tr.response").all():
                code = await row.get_attribute("data-code")
                assert code is not None
                inner = row.locator(".response-col_description__inner")
                description = await inner.inner_text()
                text = await row.locator("pre.example").inner_text()
                shown[code] = (description.strip(), text)
                if code == "503":  # the shared response's header, resolved too
                    assert "Retry-After" in await row.inner_text()
            op_text = await op.inner_text()
            await op.locator("button.try-out__btn").click()
            await op.locator("tr[data-param-name='upper'] select").select_option("true")
            await op.locator("input[type=file]").set_input_files(str(upload))
            await op.locator("button.execute").click()
            body = op.locator(".live-responses-table .response-col_description pre")
            await body.first.wait_for(timeout=20_000)
            answer = json.loads(await body.first.inner_text())
        finally:
            await browser.close()
    assert errors == []
    # Nothing left unresolved, nor examples made up from types.
    assert "Could not resolve reference" not in op_text
    assert "additionalProp1" not in op_text
    assert set(shown) == set(predict["responses"])
    assert example(shown["200"][1]) == answer
    assert set(answer) == {"text", "characters", "words", "warmed", "upper", "file"}
    for code, name in refs.items():
        declared = shared[name]
        description, text = shown[code]
        assert description == declared["description"], code
        assert example(text) == declared["content"]["application/json"]["example"]
        assert example(text)["code"] == int(code)
