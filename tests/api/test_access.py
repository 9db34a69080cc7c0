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
