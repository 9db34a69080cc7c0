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


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`make_handler` makes: stderr, tagged records, one
    of this module's formats; it can also write several lines at once
    (:func:`direct_handler`, :func:`write_lines`)."""


def make_handler(log_format: LogFormat) -> logging.Handler:
    """A stderr handler writing records in ``log_format``: JSON, or text
    with the level in colour when stderr is a terminal (see
    :func:`deepserve.console.colour_on`)."""
    handler = StderrHandler()
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


def direct_handler(logger: logging.Logger, level: int) -> StderrHandler | None:
    """The handler a record of ``logger`` at ``level`` would reach, when it
    is the only one and :func:`make_handler` made it with its format unchanged,
    and nothing else would see the record (no filter on the way): records
    for it may then be written by :func:`write_lines`, without making a
    :class:`logging.LogRecord` each. ``None`` otherwise (logging configured
    by someone else, a test capturing records...): log as usual."""
    if logger.disabled or logger.filters or not logger.isEnabledFor(level):
        return None
    found: StderrHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not StderrHandler:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or found.level > level or len(found.filters) != 1:
        return None
    if type(found.filters[0]) is not RequestIdFilter:
        return None
    formatter = found.formatter
    if type(formatter) in (JsonFormatter, ColourFormatter):
        return found
    if type(formatter) is logging.Formatter and formatter._fmt == TEXT_FORMAT:
        return found
    return None


def write_lines(
    handler: StderrHandler,
    logger: str,
    level: int,
    lines: list[tuple[float, str, str | None]],
) -> None:
    """Write ``(time, message, request id)`` lines of ``logger`` at ``level``
    with ``handler``, as logging would, in one write.

    Only for a handler :func:`direct_handler` gave: its formatter reads no
    more of a record than is set here.
    """
    formatter = handler.formatter
    assert formatter is not None
    levelname = logging.getLevelName(level)
    text = []
    for created, message, request_id in lines:
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__.update(
            name=logger,
            msg=message,
            args=None,
            levelname=levelname,
            levelno=level,
            created=created,
            msecs=int((created - int(created)) * 1000) + 0.0,
            exc_info=None,
            exc_text=None,
            stack_info=None,
            request_id=request_id,
            request_tag=f" [{request_id}]" if request_id else "",
        )
        text.append(formatter.format(record))
    text.append("")
    handler.acquire()
    try:
        handler.stream.write(handler.terminator.join(text))
        handler.flush()
    except Exception:  # as logging does: a broken stderr never stops serving
        handler.handleError(record)
    finally:
        handler.release()


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
