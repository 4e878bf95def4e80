"""securemysql.connect and ConnectionFactory against the sandbox, with real azure-identity."""

from __future__ import annotations

import subprocess
import sys

import pytest

import securemysql
from securemysql.errors import (
    CertificateVerificationError,
    ConfigurationError,
    HostnameMismatchError,
    InsecureConfigurationError,
    TLSNotOfferedError,
)
from securemysql.sandbox import Sandbox, TLSMode

pytestmark = pytest.mark.integration


def _session(connection: object) -> dict[str, str]:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("SELECT CURRENT_USER()")
    user = cursor.fetchone()[0]
    cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
    status = {str(name): str(value) for name, value in cursor.fetchall()}
    cursor.close()
    return {"user": str(user), **status}


def _factory(sandbox: Sandbox, **overrides: object) -> securemysql.ConnectionFactory:
    info = sandbox.info
    arguments: dict[str, object] = {
        "port": info.port,
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "retry": securemysql.RetryPolicy.disabled(),
    }
    arguments.update(overrides)
    return securemysql.ConnectionFactory(info.host, info.user, **arguments)  # type: ignore[arg-type]


def test_connect_as_token_user_over_tls(sandbox: Sandbox) -> None:
    info = sandbox.info

    connection = securemysql.connect(
        info.host, info.user, port=info.port, database=info.database, ssl_ca=info.ssl_ca
    )

    session = _session(connection)
    assert session["user"] == "sandbox-app@%"
    assert session["Ssl_version"] in ("TLSv1.2", "TLSv1.3")
    assert sandbox.identity.request_count == 1
    connection.close()


def test_client_side_tls_info_recorded(sandbox: Sandbox) -> None:
    connection = _factory(sandbox)()

    tls = securemysql.connection_tls_info(connection)

    assert tls is not None
    assert tls.version == _session(connection)["Ssl_version"]
    assert tls.cipher == _session(connection)["Ssl_cipher"]
    connection.close()


def test_factory_returns_new_connection_each_call(sandbox: Sandbox) -> None:
    factory = _factory(sandbox)

    first, second = factory(), factory()

    assert first is not second
    assert first.thread_id() != second.thread_id()
    assert sandbox.identity.request_count == 1
    first.close()
    second.close()


def test_connect_by_localhost_name(sandbox: Sandbox) -> None:
    info = sandbox.info

    connection = securemysql.connect(
        "localhost", info.user, port=info.port, ssl_ca=info.ssl_ca,
        retry=securemysql.RetryPolicy.disabled(),
    )  # fmt: skip

    assert _session(connection)["user"] == "sandbox-app@%"
    connection.close()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        (TLSMode.UNTRUSTED, CertificateVerificationError),
        (TLSMode.WRONG_HOST, HostnameMismatchError),
        (TLSMode.NONE, TLSNotOfferedError),
    ],
)
def test_unverifiable_tls_fails_before_token_sent(
    sandbox: Sandbox, mode: TLSMode, error: type[Exception]
) -> None:
    factory = _factory(sandbox)
    sandbox.restart(tls=mode)
    accepted = sandbox.verifier.accepted
    rejected = len(sandbox.verifier.rejections)

    with pytest.raises(error):
        factory()

    # The verifier receives every password the server gets, and it received none.
    assert sandbox.verifier.accepted == accepted
    assert len(sandbox.verifier.rejections) == rejected


def test_default_trust_rejects_sandbox_ca(sandbox: Sandbox) -> None:
    factory = _factory(sandbox, ssl_ca=None)
    accepted = sandbox.verifier.accepted

    with pytest.raises(CertificateVerificationError):
        factory()

    assert sandbox.verifier.accepted == accepted


@pytest.mark.parametrize(
    "argument", [{"ssl_disabled": True}, {"ssl_verify_cert": False}, {"ssl": {}}]
)
def test_weakening_driver_arguments_rejected(sandbox: Sandbox, argument: dict[str, object]) -> None:
    with pytest.raises(InsecureConfigurationError):
        _factory(sandbox, **argument)


def test_password_argument_rejected(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigurationError, match="password"):
        _factory(sandbox, password="secret")


@pytest.mark.parametrize("name", ["ca_file", "cafile"])
def test_ca_file_argument_points_to_ssl_ca(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(ConfigurationError, match="use ssl_ca instead"):
        _factory(sandbox, **{name: sandbox.info.ssl_ca})


def test_demo_command_reports_user_and_tls() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "securemysql", "demo"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "sandbox-app@%" in result.stdout
    assert "TLSv1.2" in result.stdout or "TLSv1.3" in result.stdout
    assert "eyJ" not in result.stdout + result.stderr
