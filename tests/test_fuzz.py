"""Schemathesis against the server's own OpenAPI document.

A real ``deepserve run`` subprocess serves the demo model and a fake model
with every kind of argument (query, form, header, file, list, enum, ranges;
training included). For every operation of the document it publishes,
schemathesis generates a bounded number of requests, valid and invalid, and
checks each response: never a 5xx, and status code, content type, headers
and body as the document says. ``DEEPSERVE_FUZZ_EXAMPLES`` raises the bound
for a longer run.

The same runs against servers with bearer-token authentication on (with
predictions protected, and left open): every case is sent once with the
right token, where it must behave as without authentication, and once with
no token or a wrong one, where every protected operation must answer the
``401`` its document promises and every public one must answer as usual.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    negative_data_rejection,
    positive_data_acceptance,
)

from tests.conftest import subprocess_env, write_dist  # noqa: E402
from tests.servers import Server, get_json  # noqa: E402

EXAMPLES = int(os.environ.get("DEEPSERVE_FUZZ_EXAMPLES", "25"))

pytestmark = pytest.mark.timeout(600)

TOKEN = "fuzz-token-7c1e0b5d"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
#: What a client without the token may send instead (``None``: nothing).
BAD_AUTHORIZATION = [
    None,
    "Bearer not-the-token",
    f"Bearer {TOKEN}x",
    f"Basic {TOKEN}",
    TOKEN,
    "Bearer",
]
#: Operations anyone may call with authentication on (see doc/security.rst).
PUBLIC = [
    r"GET /",
    r"GET /v2/",
    r"GET /v2/models/",
    r"GET /v2/models/[^/]+/(versions/[^/]+)?",
    r"GET /v2/models/[^/]+/(versions/[^/]+/)?ready",
    r"GET /v2/health/(live|ready)",
]
#: ... and with ``--noauth-predict`` (DEEPaaS's predict and the protocol's
#: infer alike).
OPEN_PREDICT = r"POST /v2/models/[^/]+/(versions/[^/]+/)?(predict/|infer)"


@pytest.fixture(scope="module")
def fuzz_site(fake_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dist(
        tmp_path_factory.mktemp("fuzzsite"),
        "fake-fuzz",
        {"fuzz": ("deepserve.v2.model", "fake_fuzz")},
    )


def serve(site: Path, args: list[str], env: dict[str, str]) -> Iterator[Server]:
    server = Server(
        ["--model-name", "fuzz,demo", "--executor", "thread", "--workers", "2", *args],
        {**subprocess_env(site), **env},
    )
    try:
        server.wait_ready("")
        yield server
    finally:
        log = server.stop()
        # Whatever the fuzzer sent, the server never logged a traceback.
        assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def fuzz_server(fuzz_site: Path) -> Iterator[Server]:
    yield from serve(fuzz_site, [], {})


@dataclasses.dataclass(frozen=True)
class Secured:
    """A server with authentication on, and the operations it leaves open."""

    server: Server
    public: tuple[str, ...]

    def protects(self, operation: str) -> bool:
        """Whether ``operation`` ("GET /v2/...") needs the token."""
        return not any(re.fullmatch(p, operation) for p in self.public)


@pytest.fixture(
    scope="module", params=[False, True], ids=["predict-protected", "noauth-predict"]
)
def secured(request: pytest.FixtureRequest, fuzz_site: Path) -> Iterator[Secured]:
    """Authentication on, the token from the environment; the debug endpoint
    on too, as one more endpoint that is always protected."""
    args, public = ["--debug-endpoint"], PUBLIC
    if request.param:
        args, public = [*args, "--noauth-predict"], [*public, OPEN_PREDICT]
    for server in serve(fuzz_site, args, {"DEEPSERVE_AUTH_TOKEN": TOKEN}):
        yield Secured(server, tuple(public))


def sendable(case: schemathesis.Case) -> bool:
    """Whether ``case`` can travel as HTTP at all.

    Multipart field names travel in part headers, where control characters
    and quotes are invalid HTTP: aiohttp's parser refuses such a part before
    deepserve sees it (answered 400, which schemathesis would count as a
    rejected valid request). Such names are left out of the generated cases.
    """
    if case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return True
    return all(
        not any(ord(c) < 0x20 or c in '"\x7f' for c in str(key)) for key in case.body
    )


def validate(
    case: schemathesis.Case, headers: dict[str, str] | None = None
) -> schemathesis.Response:
    """Send ``case`` and run schemathesis's checks on the answer."""
    # In a form every value travels as text ("null", "[]"...), so a form
    # "of the wrong type" is often a valid one: no check that such forms
    # are refused.
    stringly = case.media_type == "multipart/form-data"
    excluded = [negative_data_rejection] if stringly else []
    # The protocol's request schema is the same for every model: which
    # tensors a model needs (and their shapes) is no JSON schema of OpenAPI
    # 3.0, so a schema-valid inference may rightly be refused with 400.
    if is_infer(case):
        excluded.append(positive_data_acceptance)
    return case.call_and_validate(
        headers=headers, timeout=30, excluded_checks=excluded or None
    )


def is_infer(case: schemathesis.Case) -> bool:
    """Whether ``case`` is an Open Inference Protocol inference."""
    return case.operation.path.endswith("/infer")


#: Sends one generated case (and what else goes with it) and checks answers.
Check = Callable[[schemathesis.Case, str | None], None]


def fuzz(server: Server, check: Check, *, bad_authorization: bool = False) -> None:
    """Run ``check`` on generated cases of every operation of ``server``'s
    document; fail with every operation that failed.

    :param bad_authorization: also draw, for each case, one of
        :data:`BAD_AUTHORIZATION` for ``check``'s second argument.
    """
    schema = schemathesis.openapi.from_url(
        server.base + "/swagger.json", wait_for_schema=30
    )
    # No made-up Authorization headers: the checks send their own.
    schema.config.generation.update(with_security_parameters=False)
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # predict, training, listing, docs...
    authorizations = st.sampled_from(BAD_AUTHORIZATION if bad_authorization else [None])
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ).filter(sendable)

        @given(case=cases, authorization=authorizations)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case, authorization: str | None) -> None:
            check(case, authorization)

        try:
            run()
        except Exception as exc:  # collect them all, report every operation
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_api_conforms_to_its_own_document(fuzz_server: Server) -> None:
    fuzz(fuzz_server, lambda case, _authorization: validate(case))


def test_with_a_token_protected_operations_document_401(secured: Secured) -> None:
    spec = get_json(secured.server.base + "/swagger.json")
    assert isinstance(spec, dict)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":  # shared by the path's operations
                continue
            protected = secured.protects(f"{method.upper()} {path}")
            assert ("security" in op) == protected, (method, path)
            assert ("401" in op["responses"]) == protected, (method, path)


def test_with_a_token_the_api_conforms_and_protected_operations_refuse_others(
    secured: Secured,
) -> None:
    def check(case: schemathesis.Case, authorization: str | None) -> None:
        # With the token, as without authentication.
        validate(case, GOOD)
        # Without it, the answer conforms too, and is a 401 from protected
        # operations.
        response = validate(
            case, None if authorization is None else {"Authorization": authorization}
        )
        if not secured.protects(case.operation.label):
            assert response.status_code != 401, response.text
            return
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"][0].startswith("Bearer ")
        body = response.json()
        # The protocol's error shape on its paths, DEEPaaS's elsewhere.
        if is_infer(case):
            assert set(body) == {"error"} and "token" in body["error"].lower(), body
        else:
            assert body["code"] == 401, body

    fuzz(secured.server, check, bad_authorization=True)
