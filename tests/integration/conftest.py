"""The test servers of the sink tests, one fixture each; the servers themselves are in tests/support/.

Each starts on 127.0.0.1 (a free port) and stops after the test. A module that needs a server built
differently overrides its `*_options` fixture (constructor keywords), e.g.

    @pytest.fixture
    def sls_server_options() -> dict[str, Any]:
        return {"projects": {"k8s-log-c0123": []}}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.loki_server import LokiServer
from tests.support.s3_server import SeaweedS3
from tests.support.sls_server import SlsTestServer


@pytest.fixture
def loki_server_options() -> dict[str, Any]:
    """Keywords of LokiServer (limits, clock, auth, TLS, faults): stock Loki v3.7.6 unless a module overrides this."""
    return {}


@pytest.fixture
def loki_server(loki_server_options: dict[str, Any]) -> Iterator[LokiServer]:
    with LokiServer(**loki_server_options) as server:
        yield server


@pytest.fixture
def sls_server_options() -> dict[str, Any]:
    """Keywords of SlsTestServer (keys, projects, region, limits, TLS): key AKID, project k8s-log-c0123 with logstore audit-c0123 unless overridden."""
    return {}


@pytest.fixture
def sls_server(sls_server_options: dict[str, Any]) -> Iterator[SlsTestServer]:
    with SlsTestServer(**sls_server_options) as server:
        yield server


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) per test module: it takes seconds to start; every test makes its own bucket."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
