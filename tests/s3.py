"""A throwaway S3 API for the tests of model stores at ``s3://`` URLs.

:func:`s3` starts moto's S3 server once per test session, in a thread of
the test process, listening on 127.0.0.1 on a port the system picks, and
stops it at the end. Each test asks :meth:`S3.new_bucket` for an empty
bucket of its own and reaches the server with s3fs, the way users do: in
this process through storage options (:meth:`S3.options`), in
subprocesses through the environment (:meth:`S3.env`), never through the
user's own AWS configuration.

Tests that need it are skipped, saying why, when ``moto[server]`` or
``s3fs`` is not installed.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

KEY = "deepserve-test-key"
SECRET = "deepserve-test-secret"
REGION = "eu-west-1"


@dataclass(frozen=True)
class S3:
    """moto's S3 server at ``endpoint``."""

    endpoint: str

    def options(self) -> dict[str, Any]:
        """s3fs's storage options for the server, credentials included."""
        return {
            "endpoint_url": self.endpoint,
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"region_name": REGION},
        }

    def env(self, *, credentials: bool = True) -> dict[str, str]:
        """Variables that send a subprocess's s3fs to the server (fsspec's
        ``FSSPEC_S3_ENDPOINT_URL``), with or without credentials, and keep
        the user's own AWS files and the instance metadata service out."""
        env = {
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if credentials:
            env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        return env

    def filesystem(self) -> Any:
        import fsspec

        return fsspec.filesystem("s3", **self.options())

    def new_bucket(self) -> str:
        """The name of a new, empty bucket."""
        name = f"deepserve-{uuid.uuid4().hex[:16]}"
        self.filesystem().mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    pytest.importorskip("s3fs", reason="the s3:// tests need s3fs")
    server_module = pytest.importorskip(
        "moto.server", reason="the s3:// tests need moto[server]"
    )
    # One line per request otherwise, in every failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = server_module.ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()
