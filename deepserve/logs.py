"""Log records tagged with the request they belong to, as text or JSON.

The HTTP layer sets :data:`REQUEST_ID` while it handles a request; the
:class:`RequestIdFilter` copies it onto every record, so a line logged deep
in the runtime still says which request caused it. Only the CLI (and worker
processes, which are programs of their own) call :func:`configure`:
importing this module changes nothing.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
from typing import Any

from deepserve import console
from deepserve.settings import LogFormat

#: The id of the request being handled in this context, if any.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "deepserve_request_id", default=None
)

#: The text format; ``%(request_tag)s`` is `` [<id>]`` inside a request.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (``None`` outside a request) and ``request_tag``.

    A record that already carries a ``request_id`` (the access log passes
    it explicitly, because it is written after the request's context ended)
    keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
    ``message``, ``request_id`` (``null`` outside a request) and, when the
    record has one, ``exception`` (the formatted traceback). Newlines inside
    a message are escaped, so one record is always one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        # Cached on the record as logging.Formatter does, for other handlers.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ColourFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` with the level in colour, for a terminal."""

    STYLES = {
        "DEBUG": ("dim",),
        "INFO": ("green",),
        "WARNING": ("bold", "yellow"),
        "ERROR": ("bold", "red"),
        "CRITICAL": ("bold", "red"),
    }

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._levels = {
            name: console.paint(name, *styles, force=True)
            for name, styles in self.STYLES.items()
        }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        painted = self._levels.get(record.levelname)
        if painted is None:
            return text
        # The level is the first field after the time: colour that one.
        return text.replace(f" {record.levelname} ", f" {painted} ", 1)


def make_handler(log_format: LogFormat) -> logging.Handler:
    """A stderr handler writing records in ``log_format``: JSON, or text
    with the level in colour when stderr is a terminal (see
    :func:`deepserve.console.colour_on`)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    elif console.colour_on(handler.stream):
        formatter = ColourFormatter()
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    return handler


def configure(*, level: int, log_format: LogFormat) -> None:
    """Send every record at ``level`` and above to stderr in ``log_format``.

    Replaces handlers installed before (a second call reconfigures).
    """
    logging.basicConfig(level=level, handlers=[make_handler(log_format)], force=True)


def current_format() -> LogFormat:
    """The format :func:`configure` set up, so that worker processes (which
    configure their own logging) write the same format as the server."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return "json"
    return "text"
