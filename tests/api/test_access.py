"""The access log never writes a credential (unit part; the server part is
in tests/test_server.py)."""

from __future__ import annotations

import pytest

from deepserve.api.access import REDACTED, redact


@pytest.mark.parametrize(
    ("path_qs", "expected"),
    [
        ("/v2/", "/v2/"),
        ("/v2/?", "/v2/?"),
        ("/p?token=abc", f"/p?token={REDACTED}"),
        ("/p?x=1&ACCESS_TOKEN=abc&y=2", f"/p?x=1&ACCESS_TOKEN={REDACTED}&y=2"),
        ("/p?api%5Fkey=abc", f"/p?api%5Fkey={REDACTED}"),
        ("/p?api_key=", f"/p?api_key={REDACTED}"),
        ("/p?text=hello&flag&n=1", "/p?text=hello&flag&n=1"),
        # Names that carry credentials, however spelled.
        ("/p?x-api-key=abc", f"/p?x-api-key={REDACTED}"),
        ("/p?private_token=abc", f"/p?private_token={REDACTED}"),
        ("/p?sessionid=abc&pwd=x", f"/p?sessionid={REDACTED}&pwd={REDACTED}"),
    ],
)
def test_credential_parameters_are_redacted(path_qs, expected):
    assert redact(path_qs) == expected


def test_a_configured_token_is_redacted_under_any_name():
    secret = "s3cret/+token"
    encoded = "s3cret%2F%2Btoken"
    assert redact(f"/p?text={encoded}&n=1", {secret}) == f"/p?text={REDACTED}&n=1"
    assert redact("/p?text=hello", {secret}) == "/p?text=hello"
    # Inside a value, and with '+' kept as a plus.
    assert redact(f"/p?q=Bearer%20{encoded}", {secret}) == f"/p?q={REDACTED}"
    assert redact("/p?q=s3cret/+token", {secret}) == f"/p?q={REDACTED}"
    assert redact("/p?q=hello", {""}) == "/p?q=hello"  # an empty token is none


def test_kept_lines_are_written_once_per_turn_of_whichever_loop(capsys):
    """A flush scheduled on a loop that closed before it ran does not stop
    the next loop's lines from being written (access.Pending)."""
    import asyncio
    import logging

    from deepserve import logs
    from deepserve.api.access import Pending

    logger = logging.getLogger("deepserve.test.access")
    handler = logs.make_handler("text")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    pending = Pending()
    try:
        first = asyncio.new_event_loop()

        async def add(text: str) -> None:
            pending.add(logger, 1764700000.0, text, "rid")

        first.run_until_complete(add("one"))  # flush scheduled, never run
        first.close()
        second = asyncio.new_event_loop()

        async def add_and_turn(text: str) -> None:
            await add(text)
            await asyncio.sleep(0)  # one turn: the flush runs

        second.run_until_complete(add_and_turn("two"))
        second.close()
        err = capsys.readouterr().err.splitlines()
        assert [line.split(": ", 1)[1] for line in err] == ["one", "two"]
        assert all(" INFO deepserve.test.access [rid]: " in line for line in err)
    finally:
        logger.handlers.clear()
        logger.propagate = True
