"""A lean access log: one line per request, cheap enough for the hot path.

Credentials never reach it: the value of a query parameter that carries
one (``token``, ``access_token``, ``api_key``...), or that equals a
configured token, is written as ``REDACTED``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from urllib.parse import unquote, unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from deepserve.api import requestids

#: The app's configured tokens, for :func:`redact` (set by ``create_app``).
SECRETS = web.AppKey("access_log_secrets", frozenset)
#: Query parameters whose value is a credential, whatever it is.
SENSITIVE = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "auth",
        "authorization",
        "signature",
        "sig",
    }
)
REDACTED = "REDACTED"


def redact(path_qs: str, secrets: Collection[str] = ()) -> str:
    """``path_qs`` with the values of credential parameters replaced."""
    path, sep, query = path_qs.partition("?")
    if not query:
        return path_qs
    pairs = query.split("&")
    changed = False
    for i, pair in enumerate(pairs):
        key, eq, value = pair.partition("=")
        if not eq:
            continue
        name = unquote_plus(key).strip().lower()
        if _sensitive(name) or (secrets and _holds(value, secrets)):
            pairs[i] = f"{key}={REDACTED}"
            changed = True
    return f"{path}{sep}{'&'.join(pairs)}" if changed else path_qs


#: Parts of a parameter name that say its value is a credential.
_SENSITIVE_PARTS = (
    "token", "secret", "passw", "pwd", "key", "auth", "sig", "session",
    "credential", "jwt", "cookie",
)  # fmt: skip


def _sensitive(name: str) -> bool:
    return name in SENSITIVE or any(part in name for part in _SENSITIVE_PARTS)


def _holds(value: str, secrets: Collection[str]) -> bool:
    """Whether a raw query value contains a configured token, decoded
    either way (a '+' may be a plus or a space)."""
    decoded = {value, unquote_plus(value), unquote(value)}
    return any(secret and secret in text for secret in secrets for text in decoded)


def _secrets(request: web.BaseRequest) -> frozenset[str]:
    try:
        app = request.app  # type: ignore[attr-defined]
    except (AttributeError, AssertionError, RuntimeError):
        return frozenset()  # a request no app matched
    if not isinstance(app, web.Application):
        return frozenset()
    return app.get(SECRETS, frozenset())


class AccessLogger(AbstractAccessLogger):
    """Logs ``client "METHOD path?query" status duration``.

    aiohttp's default formatter costs more than the rest of a trivial
    prediction's handling; this one formats only what operators read.
    """

    @property
    def enabled(self) -> bool:
        return bool(self.logger.isEnabledFor(logging.INFO))

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            redact(request.path_qs, _secrets(request)),
            response.status,
            time * 1000,
            # Written after the request's context ended: the id is passed
            # along, from the header the request-id middleware set.
            extra={"request_id": response.headers.get(requestids.HEADER)},
        )
