"""Driver modules against the fake MySQL server: the access token leaves only over verified TLS.

Every driver mode (PyMySQL, mysql-connector pure Python, mysql-connector C
extension) meets every trust setting the SDK accepts and a server that offers
no TLS, an untrusted certificate, a certificate for another host or only TLS
1.1. The fake server records every byte it receives, so "the token was not
sent" is checked on the server side, not taken from the client's word.

The C extension imports only in a process that loaded it before Python's ssl
module. Where that is not the case here, its cases are skipped and
tests/integration/test_transport.py runs them in a child process.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import shutil
import ssl
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import mysql.connector.connection
import pymysql.connections
import pytest
from azure.core.credentials import AccessToken as CoreAccessToken
from mysql.connector.constants import ClientFlag
from mysql.connector.plugins.mysql_clear_password import MySQLClearPasswordAuthPlugin
from mysql.connector.protocol import MySQLProtocol

import securemysql
import securemysql.drivers
from securemysql.drivers.base import is_ssl_request
from securemysql.drivers.mysqlconnector import (
    C_EXTENSION,
    PURE_PYTHON,
    GuardedTCPSocket,
    MySQLConnectorDriver,
    c_extension_status,
    first_auth_response_is_length_encoded,
)
from securemysql.errors import (
    CertificateVerificationError,
    ConfigurationError,
    DriverNotAvailableError,
    HostnameMismatchError,
    InsecureConfigurationError,
    TLSError,
    TLSNotOfferedError,
    TLSVersionError,
)
from securemysql.tls import TLSConfig
from securemysql.tokens import SCOPE_PUBLIC, audience_for_scope
from tests.fakeserver import WRONG_HOST_NAME, FakeMySQLServer, legacy_tls_available

C_EXTENSION_AVAILABLE = c_extension_status()[0]

requires_c_extension = pytest.mark.skipif(
    not C_EXTENSION_AVAILABLE,
    reason="mysql-connector's C extension is not importable in this process; "
    "test_fresh_process_runs_cext_cases in tests/integration/test_transport.py runs these "
    "cases in a child process that imports _mysql_connector first",
)
without_c_extension = pytest.mark.skipif(
    C_EXTENSION_AVAILABLE, reason="the C extension is importable in this process"
)


@dataclass(frozen=True)
class DriverMode:
    """One way to connect: ``driver=`` and ``use_pure=`` as passed to the factory."""

    id: str
    driver: str
    use_pure: Optional[bool]

    @property
    def is_c_extension(self) -> bool:
        return self.use_pure is False


PYMYSQL = DriverMode("pymysql", "pymysql", None)
MC_PURE = DriverMode("mc_pure", "mysql.connector", True)
MC_CEXT = DriverMode("mc_cext", "mysql.connector", False)
DRIVER_MODES = (PYMYSQL, MC_PURE, MC_CEXT)

# Trust settings the SDK accepts; the C extension takes CA files only.
TRUST_SETTINGS = ("default", "ssl_ca", "ssl_capath", "system", "ssl_context", "server_hostname")
C_EXTENSION_REJECTS = ("ssl_capath", "ssl_context", "server_hostname")
TRUSTS_FAKE_CA = ("ssl_ca", "ssl_capath", "ssl_context", "server_hostname")

SERVER_SCENARIOS = (
    ("no_tls", "handshake"),
    ("no_tls", "auth_switch"),
    ("tls_untrusted", "auth_switch"),
    ("tls_wrong_host", "auth_switch"),
    ("tls_legacy", "auth_switch"),
)


def mode_param(mode: DriverMode, *values: object, id: str) -> Any:
    marks = [requires_c_extension] if mode.is_c_extension else []
    return pytest.param(mode, *values, id=id, marks=marks)


# --- Tokens and credentials -----------------------------------------------------------


def _b64url(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def make_token(size: int = 1500) -> str:
    """Return a JWT-shaped access token of about ``size`` bytes, different on every call."""
    now = int(time.time())
    claims = {
        "aud": audience_for_scope(SCOPE_PUBLIC),
        "iat": now,
        "exp": now + 3600,
        "oid": "00000000-0000-0000-0000-0000000000aa",
        "tid": "00000000-0000-0000-0000-0000000000bb",
        "pad": secrets.token_urlsafe(size),
    }
    signature = base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.{signature}"


class StaticCredential:
    """A TokenCredential that always returns the same token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> CoreAccessToken:
        return CoreAccessToken(self.token, int(time.time()) + 3600)


# --- Factories and trust settings --------------------------------------------------------


def hashed_ca_directory(ca_file: str, directory: Path) -> str:
    """Return a directory holding ``ca_file`` under its OpenSSL subject-hash name."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to name a CA directory entry")
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", ca_file],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    target = directory / "ca-directory"
    target.mkdir()
    shutil.copy(ca_file, target / f"{subject_hash}.0")
    return str(target)


def trust_arguments(setting: str, server: FakeMySQLServer, tmp_path: Path) -> dict[str, Any]:
    if setting == "default":
        return {}
    if setting == "ssl_ca":
        return {"ssl_ca": server.ca_file}
    if setting == "ssl_capath":
        return {"ssl_capath": hashed_ca_directory(server.ca_file, tmp_path)}
    if setting == "system":
        return {"use_system_trust_store": True}
    if setting == "ssl_context":
        return {"ssl_context": ssl.create_default_context(cafile=server.ca_file)}
    if setting == "server_hostname":
        return {"ssl_ca": server.ca_file, "server_hostname": "localhost"}
    raise AssertionError(f"unknown trust setting {setting}")


def make_factory(
    server: FakeMySQLServer, mode: DriverMode, token: str, **arguments: Any
) -> securemysql.ConnectionFactory:
    return securemysql.ConnectionFactory(
        server.host,
        "app-user",
        port=server.port,
        driver=mode.driver,
        use_pure=mode.use_pure,
        credential=StaticCredential(token),
        retry=securemysql.RetryPolicy.disabled(),
        **arguments,
    )


def expected_error(server_mode: str, trust: str) -> type[TLSError]:
    if server_mode == "no_tls":
        return TLSNotOfferedError
    if server_mode == "tls_legacy":
        return TLSVersionError
    if server_mode == "tls_wrong_host" and trust in TRUSTS_FAKE_CA:
        return HostnameMismatchError
    return CertificateVerificationError


def full_text(exc: BaseException) -> str:
    """Return str(), repr() and the formatted traceback of ``exc`` and its chained exceptions."""
    parts = [
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    ]
    return "\n".join(parts)


def assert_token_not_received(server: FakeMySQLServer, token: str) -> None:
    assert not server.contains(token)
    assert not server.contains(token.split(".")[2])  # the signature alone
    for record in server.connections:
        assert record.auth_responses == []
        assert record.username is None  # no login packet at all


# --- The guard: no token without verified TLS ------------------------------------------------


def _guard_cases() -> Iterator[Any]:
    for mode in DRIVER_MODES:
        for trust in TRUST_SETTINGS:
            if mode.is_c_extension and trust in C_EXTENSION_REJECTS:
                continue
            for server_mode, via in SERVER_SCENARIOS:
                case_id = f"{mode.id}-{trust}-{server_mode}-{via}"
                yield mode_param(mode, trust, server_mode, via, id=case_id)


@pytest.mark.parametrize(("mode", "trust", "server_mode", "via"), list(_guard_cases()))
def test_token_withheld_from_unverified_server(
    mode: DriverMode, trust: str, server_mode: str, via: str, tmp_path: Path
) -> None:
    if server_mode == "tls_legacy" and not legacy_tls_available():
        pytest.skip("this OpenSSL cannot run a TLS 1.1 server")
    token = make_token()

    with FakeMySQLServer(server_mode, clear_password_via=via, auth_result="ok") as server:  # type: ignore[arg-type]
        factory = make_factory(server, mode, token, **trust_arguments(trust, server, tmp_path))
        with pytest.raises(TLSError) as caught:
            factory()

    error = caught.value
    assert type(error) is expected_error(server_mode, trust)
    assert server.connections, "the client never reached the fake server"
    assert_token_not_received(server, token)
    assert token not in full_text(error)
    if isinstance(error, CertificateVerificationError):
        assert error.issuer is not None
        assert "trustme" in error.issuer  # the fake server's certificate, fetched afterwards
        assert error.ca_source
    if isinstance(error, HostnameMismatchError):
        assert error.hostname == ("localhost" if trust == "server_hostname" else "127.0.0.1")
        assert error.certificate_names == (WRONG_HOST_NAME,)


@pytest.mark.parametrize("trust", C_EXTENSION_REJECTS)
@requires_c_extension
def test_c_extension_rejects_pathless_trust(trust: str, tmp_path: Path) -> None:
    token = make_token()

    rejection = pytest.raises(ConfigurationError, match="use_pure=False cannot be combined")
    with FakeMySQLServer("tls_ok", auth_result="ok") as server, rejection as caught:
        make_factory(server, MC_CEXT, token, **trust_arguments(trust, server, tmp_path))

    assert trust in str(caught.value)
    assert server.connections == []


def _success_cases() -> Iterator[Any]:
    for mode in DRIVER_MODES:
        for trust in TRUSTS_FAKE_CA:
            if mode.is_c_extension and trust in C_EXTENSION_REJECTS:
                continue
            yield mode_param(mode, trust, id=f"{mode.id}-{trust}")


@pytest.mark.parametrize(("mode", "trust"), list(_success_cases()))
def test_long_token_sent_only_inside_tls(mode: DriverMode, trust: str, tmp_path: Path) -> None:
    token = make_token(size=2300)  # about 3 KB, the top of the range Entra tokens come in

    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        factory = make_factory(
            server,
            mode,
            token,
            program_name="audit-probe",
            **trust_arguments(trust, server, tmp_path),
        )
        connection = factory()
        info = securemysql.connection_tls_info(connection)
        connection.close()

    record = server.connections[0]
    assert record.tls_version in ("TLSv1.2", "TLSv1.3")
    assert token.encode() + b"\0" in record.auth_responses  # whole, not cut at 255 bytes
    assert token.encode() not in record.raw  # on the wire it was encrypted
    assert b"program_name" in record.plaintext
    assert b"audit-probe" in record.plaintext
    assert info is not None
    assert info.version == record.tls_version
    assert info.cipher == record.tls_cipher


# --- The guard below each driver, when the driver itself would skip TLS --------------------


def test_pymysql_guard_stops_login_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    original = pymysql.connections.Connection._request_authentication

    def skip_tls(self: Any) -> None:
        self.ssl = False  # as PyMySQL does when no TLS argument is set and the server lacks TLS
        original(self)

    monkeypatch.setattr(pymysql.connections.Connection, "_request_authentication", skip_tls)
    token = make_token()

    server = FakeMySQLServer("tls_ok", clear_password_via="handshake", auth_result="ok")
    with server, pytest.raises(TLSNotOfferedError, match="Stopped before sending credentials"):
        make_factory(server, PYMYSQL, token, ssl_ca=server.ca_file)()

    assert_token_not_received(server, token)


def test_mc_pure_guard_stops_login_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    original = mysql.connector.connection.MySQLConnection._do_handshake

    def skip_tls(self: Any) -> None:
        original(self)
        self._client_flags &= ~ClientFlag.SSL

    monkeypatch.setattr(mysql.connector.connection.MySQLConnection, "_do_handshake", skip_tls)
    # Without TLS, mysql-connector's plugin would refuse on its own; take that check away too.
    monkeypatch.setattr(MySQLClearPasswordAuthPlugin, "requires_ssl", property(lambda self: False))
    token = make_token()

    server = FakeMySQLServer("tls_ok", clear_password_via="handshake", auth_result="ok")
    with server, pytest.raises(TLSNotOfferedError, match="Stopped before sending credentials"):
        make_factory(server, MC_PURE, token, ssl_ca=server.ca_file)()

    assert_token_not_received(server, token)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_pymysql_guard_rejects_other_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if PyMySQL built its own context instead of using the SDK's.
    unverified = _unverified_context()
    monkeypatch.setattr(
        pymysql.connections.Connection, "_create_ssl_ctx", lambda self, sslp: unverified
    )
    token = make_token()

    server = FakeMySQLServer("tls_untrusted", auth_result="ok")
    with server, pytest.raises(TLSNotOfferedError):
        make_factory(server, PYMYSQL, token, ssl_ca=server.ca_file)()

    assert server.connections[0].tls_version is not None  # TLS itself was set up
    assert_token_not_received(server, token)


def test_mc_guard_rejects_other_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if mysql-connector built its context from its own ssl_* arguments again.
    unverified = _unverified_context()
    monkeypatch.setattr(GuardedTCPSocket, "build_ssl_context", lambda self, **kw: unverified)
    token = make_token()

    server = FakeMySQLServer("tls_untrusted", auth_result="ok")
    with server, pytest.raises(TLSNotOfferedError):
        make_factory(server, MC_PURE, token, ssl_ca=server.ca_file)()

    assert server.connections[0].tls_version is not None
    assert_token_not_received(server, token)


def test_mc_socket_allows_one_ssl_request() -> None:
    request = MySQLProtocol.make_auth_ssl(
        charset=45, client_flags=ClientFlag.get_default() | ClientFlag.SSL
    )
    context = TLSConfig().create_ssl_context()

    with FakeMySQLServer("no_tls") as server:
        sock = GuardedTCPSocket(server.host, server.port, False, context)
        sock.open_connection()
        sock.recv()  # the greeting
        sock.send(request)
        with pytest.raises(TLSNotOfferedError):
            sock.send(request)
        sock.shutdown()

    assert server.connections[0].client_requested_tls
    assert server.connections[0].username is None


def test_ssl_request_recognised() -> None:
    mc_request = MySQLProtocol.make_auth_ssl(charset=45, client_flags=ClientFlag.SSL)
    without_ssl_flag = MySQLProtocol.make_auth_ssl(charset=45, client_flags=ClientFlag.PROTOCOL_41)
    login, _ = MySQLProtocol.make_auth(
        handshake={"auth_data": b"x" * 20, "auth_plugin": "mysql_native_password"},
        username="u",
        password="p" * 10,
        client_flags=ClientFlag.get_default() | ClientFlag.SSL,
    )

    assert is_ssl_request(mc_request)
    assert not is_ssl_request(without_ssl_flag)
    assert not is_ssl_request(login)
    assert not is_ssl_request(mc_request[:-1] + b"\x01")  # filler must be zero


def _plain_connection(mode: DriverMode, server: FakeMySQLServer) -> Any:
    """Open a connection without TLS and without the SDK (the password is no secret)."""
    arguments = {"host": server.host, "port": server.port, "user": "app-user"}
    if mode is PYMYSQL:
        return pymysql.connect(**arguments, password="plain-password", ssl_disabled=True)
    return mysql.connector.connect(
        **arguments, password="plain-password", ssl_disabled=True, use_pure=mode.use_pure
    )


@pytest.mark.parametrize("mode", [mode_param(mode, id=mode.id) for mode in DRIVER_MODES])
def test_tls_info_rejects_plain_session(mode: DriverMode) -> None:
    driver = securemysql.drivers.load_driver(mode.driver, **_driver_options(mode))

    with FakeMySQLServer("no_tls", clear_password_via="never", auth_result="ok") as server:
        connection = _plain_connection(mode, server)
        with pytest.raises(TLSNotOfferedError):
            driver.tls_info(connection)
        is_connected = connection.open if mode is PYMYSQL else connection.is_connected()

    assert server.connections[0].tls_version is None
    assert not is_connected  # tls_info() closed it


def _driver_options(mode: DriverMode) -> dict[str, Any]:
    return {} if mode.use_pure is None else {"use_pure": mode.use_pure}


# --- mysql-connector modes and quirks ---------------------------------------------------------


def test_first_auth_response_carries_long_password() -> None:
    # mysql-connector 9.7.0 and 26.10.0 write the length as a length-encoded integer.
    assert first_auth_response_is_length_encoded()


def test_use_pure_true_picks_pure_mode() -> None:
    driver = MySQLConnectorDriver(use_pure=True)

    assert driver.choose_mode(TLSConfig()) == (PURE_PYTHON, "")


@pytest.mark.parametrize("setting", ["ssl_capath", "ssl_context", "server_hostname"])
def test_default_mode_falls_back_for_pathless_trust(
    setting: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arguments: dict[str, Any] = {
        "ssl_capath": {"ssl_capath": str(tmp_path)},
        "ssl_context": {"ssl_context": ssl.create_default_context()},
        "server_hostname": {"server_hostname": "db.example.com"},
    }[setting]
    caplog.set_level(logging.INFO, logger="securemysql.drivers")

    factory = _factory("mysql.connector", **arguments)

    mode, reason = factory.driver.choose_mode(factory.tls)  # type: ignore[attr-defined]
    assert mode == PURE_PYTHON
    assert setting in reason
    assert any(setting in record.getMessage() for record in caplog.records)


@without_c_extension
def test_default_mode_without_c_extension_logs_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="securemysql.drivers")

    factory = securemysql.ConnectionFactory(
        "127.0.0.1", "app-user", driver="mysql.connector", credential=StaticCredential("x")
    )

    assert factory.driver.choose_mode(factory.tls)[0] == PURE_PYTHON  # type: ignore[attr-defined]
    messages = [record.getMessage() for record in caplog.records]
    assert any("C extension is not available" in message for message in messages)


@without_c_extension
def test_use_pure_false_without_c_extension_raises() -> None:
    with pytest.raises(DriverNotAvailableError) as caught:
        securemysql.ConnectionFactory(
            "127.0.0.1", "app-user", driver="mysql.connector", use_pure=False,
            credential=StaticCredential("x"),
        )  # fmt: skip

    message = str(caught.value)
    assert "import _mysql_connector" in message
    assert "use_pure=True" in message


@requires_c_extension
def test_default_mode_prefers_c_extension() -> None:
    factory = securemysql.ConnectionFactory(
        "127.0.0.1", "app-user", driver="mysql.connector", credential=StaticCredential("x")
    )

    assert factory.driver.choose_mode(factory.tls) == (C_EXTENSION, "")  # type: ignore[attr-defined]


def test_use_pure_rejected_for_pymysql() -> None:
    with pytest.raises(ConfigurationError, match="use_pure"):
        securemysql.ConnectionFactory(
            "127.0.0.1", "app-user", use_pure=True, credential=StaticCredential("x")
        )


# --- Driver arguments -----------------------------------------------------------------------

WEAKENING = [
    {"ssl_disabled": True},
    {"ssl_verify_cert": False},
    {"ssl_verify_identity": False},
    {"ssl_verify_cert": None},
    {"ssl": {"ca": "ca.pem"}},
    {"ssl_mode": "DISABLED"},
    {"tls_versions": ["TLSv1.1"]},
    {"tls_ciphersuites": ["TLS_AES_128_GCM_SHA256"]},
    {"ssl_cipher": "NULL"},
    {"option_files": "/etc/mysql/my.cnf"},
    {"option_groups": ["client"]},
    {"read_default_file": "~/.my.cnf"},
    {"read_default_group": "client"},
]

OWNED_BY_SDK = [
    {"ssl_disabled": False},
    {"ssl_verify_cert": True},
    {"ssl_verify_identity": True},
    {"password": "secret-password"},
    {"auth_plugin": "mysql_native_password"},
    {"password2": "second-factor"},
    {"openid_token_file": "token.jwt"},
    {"unix_socket": "/run/mysqld/mysqld.sock"},
    {"ssl_key_password": "pem-pass"},
    {"tls_something_new": True},
]

MC_UNSUPPORTED = [
    {"pool_name": "app"},
    {"pool_size": 5},
    {"failover": [{"host": "a"}]},
    {"dsn": "mysql://x"},
    {"dns_srv": True},
    {"client_flags": [ClientFlag.FOUND_ROWS, -ClientFlag.SSL]},
    {"conn_attrs": {"program_name": "other"}},
    {"conn_attrs": "program_name=other"},
]

MC_ACCEPTED = [
    {"client_flags": [ClientFlag.FOUND_ROWS]},
    {"client_flags": ClientFlag.get_default() | ClientFlag.FOUND_ROWS},
    {"conn_attrs": {"team": "billing"}},
    {"force_ipv6": False},
    {"allow_local_infile": False},
    {"converter_class": None},
    {"autocommit": True},
]


def _factory(driver: str, **arguments: Any) -> securemysql.ConnectionFactory:
    return securemysql.ConnectionFactory(
        "127.0.0.1", "app-user", driver=driver, credential=StaticCredential("x"), **arguments
    )


@pytest.mark.parametrize("driver", ["pymysql", "mysql.connector"])
@pytest.mark.parametrize("argument", WEAKENING, ids=lambda a: next(iter(a)))
def test_weakening_argument_rejected(driver: str, argument: dict[str, Any]) -> None:
    name = next(iter(argument))

    with pytest.raises(InsecureConfigurationError) as caught:
        _factory(driver, **argument)

    assert f"{name}=" in str(caught.value)
    assert "rejected" in str(caught.value)


@pytest.mark.parametrize("driver", ["pymysql", "mysql.connector"])
@pytest.mark.parametrize("argument", OWNED_BY_SDK, ids=lambda a: f"{next(iter(a))}")
def test_sdk_owned_argument_rejected(driver: str, argument: dict[str, Any]) -> None:
    name = next(iter(argument))

    with pytest.raises(ConfigurationError) as caught:
        _factory(driver, **argument)

    assert not isinstance(caught.value, InsecureConfigurationError)
    assert f"{name}=" in str(caught.value)
    assert "secret-password" not in str(caught.value)


@pytest.mark.parametrize("argument", MC_UNSUPPORTED, ids=lambda a: next(iter(a)))
def test_mc_unsupported_argument_rejected(argument: dict[str, Any]) -> None:
    name = next(iter(argument))

    with pytest.raises(ConfigurationError, match=name):
        _factory("mysql.connector", **argument)


@pytest.mark.parametrize("argument", MC_ACCEPTED, ids=lambda a: next(iter(a)))
def test_mc_harmless_argument_accepted(argument: dict[str, Any]) -> None:
    factory = _factory("mysql.connector", **argument)

    assert dict(factory.driver_kwargs) == argument


def test_driver_reprs_show_mode() -> None:
    assert repr(MySQLConnectorDriver(use_pure=True)) == "MySQLConnectorDriver(use_pure=True)"
    assert "use_pure=None" in repr(_factory("mysql.connector").driver)


# --- mysql-connector's DEBUG record of the clear-text password ----------------------------


def test_mc_password_debug_record_redacted(caplog: pytest.LogCaptureFixture) -> None:
    # mysql-connector logs its reply to an AuthSwitchRequest, password included, at DEBUG.
    caplog.set_level(logging.DEBUG)
    token = make_token()

    with FakeMySQLServer("tls_ok", clear_password_via="auth_switch", auth_result="ok") as server:
        make_factory(server, MC_PURE, token, ssl_ca=server.ca_file)().close()

    messages = [record.getMessage() for record in caplog.records]
    requests = [message for message in messages if message.startswith("# request:")]
    assert requests, "mysql-connector no longer logs the auth switch response"
    assert all("[REDACTED]" in message for message in requests)
    assert not [message for message in messages if token in message or "eyJ" in message]
    assert server.contains(token)  # the token did reach the server, inside TLS
