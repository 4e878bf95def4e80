"""Shared fixtures: the session sandbox (from securemysql's pytest plugin), reset per test."""

from __future__ import annotations

# mysql-connector-python 26.x's C extension links the newer OpenSSL it ships. It
# imports only if nothing has loaded the system OpenSSL yet, so try it first of all.
# NOTE: under pytest this still fails on Debian 12 (mysql-connector-python 26.10):
# pytest has already loaded the system libcrypto before any conftest runs, and
# the extension's bundled libssl needs OPENSSL_3.3.0 symbols from it. So
# tests/integration/test_transport.py runs the C extension tests in a child process
# that imports _mysql_connector first.
import contextlib

with contextlib.suppress(ImportError):
    import _mysql_connector  # noqa: F401

from collections.abc import Iterator

import pytest

from securemysql.sandbox import Sandbox, TLSMode
from tests import netguard

netguard.install()


@pytest.fixture
def sandbox(securemysql_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The session sandbox with azure-identity pointed at it, restored after the test.

    Tests may inject faults, shorten token lifetimes, rotate keys, stop the server or
    restart it with another TLS mode; this fixture puts everything back.
    """
    for name, value in securemysql_sandbox.identity.environment().items():
        monkeypatch.setenv(name, value)
    lifetime = securemysql_sandbox.identity.token_lifetime
    securemysql_sandbox.identity.reset_counts()

    yield securemysql_sandbox

    securemysql_sandbox.identity.clear_fault()
    securemysql_sandbox.identity.token_lifetime = lifetime
    if securemysql_sandbox.tls_mode is not TLSMode.VERIFIED:
        securemysql_sandbox.restart(tls=TLSMode.VERIFIED)
    elif not securemysql_sandbox.server.is_running():
        securemysql_sandbox.start_server()
    securemysql_sandbox.set_require_secure_transport(securemysql_sandbox.require_secure_transport)
    securemysql_sandbox.set_max_connections(200)
