"""Swagger UI, served from the files of the swagger-ui-bundle package (offline)."""

from __future__ import annotations

import html
import string

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

_PAGE = string.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>$title</title>
  <link rel="stylesheet" type="text/css" href="$static/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="$static/index.css">
  <link rel="icon" type="image/png" href="$static/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="$static/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="$static/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "$spec",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout",
      });
    };
  </script>
</body>
</html>
"""
)


def add_routes(app: web.Application, *, base_path: str, spec_url: str) -> str:
    """Add the UI at ``{base_path}/api``; return its URL path."""
    static = f"{base_path}/api/static"
    page = _PAGE.substitute(
        title="deepserve API",
        static=html.escape(static),
        spec=html.escape(spec_url),
    )

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{base_path}/api")

    app.router.add_get(f"{base_path}/api{{slash:/?}}", index, allow_head=False)
    app.router.add_get(f"{base_path}/ui{{slash:/?}}", redirect, allow_head=False)
    app.router.add_static(static, swagger_ui_path)
    return f"{base_path}/api"
