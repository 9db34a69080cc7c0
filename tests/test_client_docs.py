"""The client guide's examples (doc/client.rst) run against a real server."""

from __future__ import annotations

import asyncio
import doctest
from pathlib import Path

import pytest

from tests.servers import Server

GUIDE = Path(__file__).resolve().parent.parent / "doc" / "client.rst"
#: The server the guide's examples name.
DOC_URL = "http://127.0.0.1:5000"


@pytest.mark.timeout(300)
async def test_the_client_guide_examples_run(
    demo_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write files
    text = GUIDE.read_text().replace(DOC_URL, demo_server.base)
    test = doctest.DocTestParser().get_doctest(text, {}, GUIDE.name, str(GUIDE), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    # In a thread: the guide's asyncio.run() must not touch the tests' loop.
    await asyncio.to_thread(runner.run, test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries >= 30
