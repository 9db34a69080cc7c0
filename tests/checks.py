"""Assertions and waits shared by the HTTP and executor tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

#: How long tests wait for something to happen in a worker process.
DEADLINE = 30.0


async def assert_error(resp: Any, status: int) -> dict[str, Any]:
    """The response is a JSON error of ``status`` without a traceback."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    assert "Traceback" not in text
    body: dict[str, Any] = await resp.json()
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


async def wait_for_pidfile(path: Path, timeout: float = DEADLINE) -> int:
    """The PID a fake model's ``train`` wrote to ``path``, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if text.strip().isdigit():
            return int(text)
        assert time.monotonic() < deadline, f"{path} was never written"
        await asyncio.sleep(0.05)
