"""Predictions as HTTP responses: bodies, and files streamed whole.

What a result's body is (:func:`deepserve.operations.encoding.encode`) is
decided for every protocol alike; this module only writes it in aiohttp.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import marshmallow
from aiohttp import web

from deepserve.operations.encoding import FileBody, download_name, encode

#: Bytes read at a time when sending a file.
CHUNK = 256 * 1024


def render(
    result: Any,
    media_type: str,
    *,
    model: str,
    schema: type[marshmallow.Schema] | None,
) -> web.Response | FileBody:
    """Build the response for what ``predict`` returned."""
    body = encode(result, media_type, model=model, schema=schema)
    if isinstance(body, FileBody):
        return body
    if isinstance(body, str):
        charset = _charset(media_type) or "utf-8"
        body = body.encode(charset, errors="replace")
        if ";" not in media_type:
            return web.Response(body=body, content_type=media_type, charset=charset)
    # A type the model wrote with parameters goes out as it wrote it.
    return web.Response(body=body, headers={"Content-Type": media_type})


def _charset(media_type: str) -> str | None:
    for param in media_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


async def send_file(
    request: web.Request,
    body: FileBody,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Stream a file completely before returning, with ``headers`` besides
    its own (they must be known before the first byte goes).

    Unlike ``FileResponse``, the file has been read to the end when this
    returns, so the caller may delete it (it may be one of the request's own
    uploads) right after.
    """
    response = web.StreamResponse(
        headers={**(headers or {}), "Content-Type": body.media_type}
    )
    response.content_length = os.path.getsize(body.path)
    safe = download_name(body.download_name or "")
    if safe:
        response.headers["Content-Disposition"] = f'inline; filename="{safe}"'
    loop = asyncio.get_running_loop()
    with open(body.path, "rb") as f:
        await response.prepare(request)
        while chunk := await loop.run_in_executor(None, f.read, CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response
