"""Log records as text or JSON, tagged with the request they belong to."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from deepserve import logs

Capture = Callable[[logs.LogFormat], tuple[logging.Logger, io.StringIO]]


@pytest.fixture
def captured() -> Iterator[Capture]:
    """A logger writing through a handler made like the CLI's, to a buffer."""

    def attach(log_format: logs.LogFormat) -> tuple[logging.Logger, io.StringIO]:
        out = io.StringIO()
        handler = logs.make_handler(log_format)
        handler.setStream(out)  # type: ignore[attr-defined]
        logger.handlers[:] = [handler]
        return logger, out

    logger = logging.getLogger("deepserve.test.logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield attach
    logger.handlers.clear()
    logger.propagate = True


def test_json_lines_have_every_key_and_parse(captured):
    logger, out = captured("json")
    logger.info("plain %s", "message")
    token = logs.REQUEST_ID.set("req-9")
    try:
        logger.warning("two\nlines")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logs.REQUEST_ID.reset(token)

    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # a newline in a message stays on its line
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "plain message" and first["request_id"] is None
    assert first["level"] == "INFO" and first["logger"] == "deepserve.test.logs"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "exception" not in first
    assert second["message"] == "two\nlines" and second["request_id"] == "req-9"
    assert third["level"] == "ERROR" and third["request_id"] == "req-9"
    assert "ValueError: boom" in third["exception"]
    assert third["exception"].startswith("Traceback")


def test_explicit_request_id_wins_over_the_context(captured):
    logger, out = captured("json")
    logger.info("access", extra={"request_id": "given"})
    assert json.loads(out.getvalue())["request_id"] == "given"


def test_text_lines_show_the_request_id_inside_requests(captured):
    logger, out = captured("text")
    logger.info("outside")
    token = logs.REQUEST_ID.set("abc")
    try:
        logger.info("inside")
    finally:
        logs.REQUEST_ID.reset(token)
    outside, inside = out.getvalue().splitlines()
    assert outside.endswith(" INFO deepserve.test.logs: outside")
    assert inside.endswith(" INFO deepserve.test.logs [abc]: inside")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_sets_the_format_workers_copy(log_format):
    # In a subprocess: configure() replaces the root handlers (pytest's too).
    code = (
        "import logging; from deepserve import logs;"
        f"logs.configure(level=logging.INFO, log_format={log_format!r});"
        "print(logs.current_format());"
        "logging.getLogger('x').info('hello')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == log_format
    if log_format == "json":
        assert json.loads(result.stderr)["message"] == "hello"
    else:
        assert result.stderr.rstrip().endswith(" INFO x: hello")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_lines_written_at_once_read_as_logging_writes_them(captured, log_format):
    """The access log's fast path (write_lines) gives, byte for byte, the
    lines logging gives for the same records."""
    logger, out = captured(log_format)
    handler = logs.direct_handler(logger, logging.INFO)
    assert handler is not None
    lines = [
        (1764700000.25, '127.0.0.1 "POST /x?a=1" 200 1.2ms', "req-1"),
        (1764700001.999, 'quote " and\nnewline', None),
    ]
    for at, message, request_id in lines:
        record = logger.makeRecord(
            logger.name, logging.INFO, "f", 1, message, None, None,
            extra={"request_id": request_id},
        )  # fmt: skip
        record.created, record.msecs = at, int((at - int(at)) * 1000) + 0.0
        logger.handle(record)
    by_logging = out.getvalue()
    out.seek(0)
    out.truncate()
    logs.write_lines(handler, logger.name, logging.INFO, lines)
    assert out.getvalue() == by_logging
    assert by_logging.count("\n") == 2 + (log_format == "text")


def test_the_direct_handler_only_when_nothing_else_sees_the_records(captured):
    logger, _out = captured("text")
    assert logs.direct_handler(logger, logging.INFO) is not None
    assert logs.direct_handler(logger, logging.DEBUG) is not None
    logger.setLevel(logging.WARNING)
    assert logs.direct_handler(logger, logging.INFO) is None  # not logged at all
    logger.setLevel(logging.DEBUG)
    # Another handler, a logger filter, a changed format, a handler of the
    # embedding program: records go through logging as usual.
    extra = logging.NullHandler()
    logger.addHandler(extra)
    assert logs.direct_handler(logger, logging.INFO) is None
    logger.removeHandler(extra)
    quiet = logging.Filter("other")
    logger.addFilter(quiet)
    assert logs.direct_handler(logger, logging.INFO) is None
    logger.removeFilter(quiet)
    (handler,) = logger.handlers
    handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    assert logs.direct_handler(logger, logging.INFO) is None
    logger.handlers[:] = [logging.StreamHandler(io.StringIO())]
    assert logs.direct_handler(logger, logging.INFO) is None
