"""The ceiling: a bare aiohttp app answering the echo predict route.

It returns the same JSON as deepserve's echo predict, with no argument
parsing, no worker process and no access log: the most a Python aiohttp
server can do on this route. Run by run.py with deepserve's venv::

    python ceiling_app.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


async def predict(request: web.Request) -> web.Response:
    text = request.query.get("text", "x")
    return web.json_response({"status": "OK", "predictions": {"echo": text}})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v2/models/echo/predict/", predict)
    return app


def main(argv: list[str]) -> int:
    port = int(argv[0])
    web.run_app(create_app(), host="127.0.0.1", port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
