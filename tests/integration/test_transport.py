"""Transport security against the sandbox, for every driver mode.

Each mode (PyMySQL, mysql-connector pure Python, mysql-connector C extension)
logs in as the token user over TLS 1.2 or 1.3, fails with the specific error
when the server's certificate is untrusted, names another host or TLS is off
(and the token verifier records no login), and sends the ``program_name``
connection attribute that the server records in performance_schema.

The C extension imports only in a process that loaded it before Python's ssl
module, which pytest's plugins prevent here; the last test runs the C
extension cases of this file, tests/integration/test_secrets.py and
tests/unit/test_drivers.py in a child process that imports it first.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mysql.connector.connection import MySQLConnection

import securemysql
from securemysql.drivers.mysqlconnector import GuardedMySQLConnection
from securemysql.errors import (
    CertificateVerificationError,
    HostnameMismatchError,
    TLSError,
    TLSNotOfferedError,
)
from securemysql.factory import default_program_name
from securemysql.sandbox import Sandbox, TLSMode
from tests.unit.test_drivers import (
    C_EXTENSION_AVAILABLE,
    DRIVER_MODES,
    MC_CEXT,
    MC_PURE,
    DriverMode,
    mode_param,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

MODES = [mode_param(mode, id=mode.id) for mode in DRIVER_MODES]

UNVERIFIABLE = [
    pytest.param(TLSMode.UNTRUSTED, CertificateVerificationError, id="untrusted"),
    pytest.param(TLSMode.WRONG_HOST, HostnameMismatchError, id="wrong_host"),
    pytest.param(TLSMode.NONE, TLSNotOfferedError, id="no_tls"),
]


def _factory(sandbox: Sandbox, mode: DriverMode, **overrides: Any) -> securemysql.ConnectionFactory:
    info = sandbox.info
    arguments: dict[str, Any] = {
        "port": info.port,
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "driver": mode.driver,
        "use_pure": mode.use_pure,
        "retry": securemysql.RetryPolicy.disabled(),
    }
    arguments.update(overrides)
    return securemysql.ConnectionFactory(info.host, info.user, **arguments)


def _query(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(_text(value) for value in row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _text(value: object) -> object:
    return bytes(value).decode() if isinstance(value, (bytes, bytearray)) else value


def _server_tls(connection: Any) -> dict[str, Any]:
    rows = _query(
        connection,
        "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')",
    )
    return dict(rows)  # type: ignore[arg-type]


def _assert_mode_used(connection: Any, mode: DriverMode) -> None:
    if mode is MC_PURE:
        assert isinstance(connection, GuardedMySQLConnection)
    elif mode is MC_CEXT:
        from mysql.connector.connection_cext import CMySQLConnection

        assert isinstance(connection, CMySQLConnection)
    else:
        assert not isinstance(connection, MySQLConnection)


# --- Verified TLS ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_token_login_over_verified_tls(sandbox: Sandbox, mode: DriverMode) -> None:
    connection = _factory(sandbox, mode)()
    try:
        user = _query(connection, "SELECT CURRENT_USER()")[0][0]
        server_tls = _server_tls(connection)
        client_tls = securemysql.connection_tls_info(connection)
        _assert_mode_used(connection, mode)
    finally:
        connection.close()

    assert user == "sandbox-app@%"
    assert server_tls["Ssl_version"] in ("TLSv1.2", "TLSv1.3")
    assert client_tls is not None
    assert client_tls.version == server_tls["Ssl_version"]
    assert client_tls.cipher == server_tls["Ssl_cipher"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("tls_mode", "error"), UNVERIFIABLE)
def test_unverifiable_server_gets_no_login(
    sandbox: Sandbox, mode: DriverMode, tls_mode: TLSMode, error: type[TLSError]
) -> None:
    factory = _factory(sandbox, mode)
    sandbox.restart(tls=tls_mode)
    accepted = sandbox.verifier.accepted
    rejected = len(sandbox.verifier.rejections)

    with pytest.raises(TLSError) as caught:
        factory()

    assert type(caught.value) is error
    # The verifier records every password the server receives: none arrived.
    assert sandbox.verifier.accepted == accepted
    assert len(sandbox.verifier.rejections) == rejected
    if isinstance(caught.value, HostnameMismatchError):
        assert caught.value.hostname == "127.0.0.1"
        assert caught.value.certificate_names  # read from the certificate after the failure
        assert "127.0.0.1" not in caught.value.certificate_names
    if isinstance(caught.value, CertificateVerificationError):
        assert caught.value.issuer
        assert caught.value.ca_source == f"CA file {sandbox.info.ssl_ca}"


# --- Connection attributes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_sandbox() -> Iterator[Sandbox]:
    """A sandbox with performance_schema on, which records connection attributes."""
    with Sandbox(performance_schema=True) as sandbox:
        yield sandbox


@pytest.fixture
def audit_env(audit_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    for name, value in audit_sandbox.identity.environment().items():
        monkeypatch.setenv(name, value)
    return audit_sandbox


def _program_name_seen_by_server(sandbox: Sandbox, connection: Any) -> list[tuple[Any, ...]]:
    connection_id = _query(connection, "SELECT CONNECTION_ID()")[0][0]
    return sandbox.server.query(
        "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
        "WHERE PROCESSLIST_ID = %s AND ATTR_NAME = 'program_name'",
        (connection_id,),
    )


@pytest.mark.parametrize("mode", MODES)
def test_program_name_visible_to_server(audit_env: Sandbox, mode: DriverMode) -> None:
    connection = _factory(audit_env, mode, program_name="billing-worker")()
    try:
        rows = _program_name_seen_by_server(audit_env, connection)
    finally:
        connection.close()

    assert rows == [("billing-worker",)]


@pytest.mark.parametrize("mode", MODES)
def test_program_name_defaults_to_application(audit_env: Sandbox, mode: DriverMode) -> None:
    connection = _factory(audit_env, mode)()
    try:
        rows = _program_name_seen_by_server(audit_env, connection)
    finally:
        connection.close()

    assert rows == [(default_program_name(),)]


# --- The C extension in a process where it can be imported ------------------------------------

_CHILD_PROGRAM = """\
import _mysql_connector  # before anything imports ssl
import sys

import pytest

sys.exit(pytest.main(sys.argv[1:]))
"""

_C_EXTENSION_FILES = (
    "tests/unit/test_drivers.py",
    "tests/integration/test_transport.py",
    "tests/integration/test_secrets.py",
)


def _c_extension_imports_in_fresh_process() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import _mysql_connector"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(C_EXTENSION_AVAILABLE, reason="the C extension cases run in this process")
def test_fresh_process_runs_cext_cases() -> None:
    if not _c_extension_imports_in_fresh_process():
        pytest.skip("mysql-connector's C extension cannot be imported even in a fresh process")

    result = subprocess.run(
        [
            sys.executable, "-c", _CHILD_PROGRAM,
            "-q", "-rs", "-p", "no:cacheprovider", "-k", "mc_cext or c_extension",
            *_C_EXTENSION_FILES,
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip

    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, output
    assert " passed" in result.stdout.strip().splitlines()[-1], output
    assert "C extension is not importable" not in result.stdout, output
