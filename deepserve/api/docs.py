"""Swagger UI, served from the files of the swagger-ui-bundle package (offline)."""

from __future__ import annotations

import html
import string
from pathlib import Path

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


class SwaggerUI:
    """The UI's page at ``{base_path}/api``, the old ``/ui`` sending there,
    and the files the page loads from ``{base_path}/api/static``."""

    #: The UI's files.
    directory = Path(swagger_ui_path)

    def __init__(self, *, base_path: str, spec_url: str) -> None:
        #: The page's URL path.
        self.url = f"{base_path}/api"
        self.page = _PAGE.substitute(
            title="deepserve API",
            static=html.escape(f"{self.url}/static"),
            spec=html.escape(spec_url),
        )

    async def index(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.page, content_type="text/html")

    async def redirect(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound(self.url)
