"""The fake MySQL server detects a password when one is sent, and only then.

These tests drive it with plain PyMySQL (not securemysql): an insecure client
must be caught sending the password, or the downgrade tests built on this
server could never fail.
"""

from __future__ import annotations

import socket
import ssl

import pymysql
import pytest
from cryptography import x509

from tests.fakeserver import (
    TLS_MODES,
    WRONG_HOST_NAME,
    ClearPasswordVia,
    FakeMySQLServer,
    legacy_tls_available,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmYWtlLXNlcnZlciJ9.c2lnbmF0dXJlLWZha2U"

BOTH_WAYS = pytest.mark.parametrize("clear_password_via", ["handshake", "auth_switch"])


def connect_pymysql(server: FakeMySQLServer, **kwargs: object) -> pymysql.Connection:
    return pymysql.connect(
        host=server.host,
        port=server.port,
        user="app-user",
        password=TOKEN,
        connect_timeout=5,
        read_timeout=5,
        **kwargs,
    )


def failed_connect(server: FakeMySQLServer, **kwargs: object) -> pymysql.err.OperationalError:
    with pytest.raises(pymysql.err.OperationalError) as raised:
        connect_pymysql(server, **kwargs)
    return raised.value


def open_client(server: FakeMySQLServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def verified_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca_file)
    return context


@BOTH_WAYS
def test_plain_client_sends_password_to_no_tls(clear_password_via: ClearPasswordVia) -> None:
    with FakeMySQLServer("no_tls", clear_password_via=clear_password_via) as server:
        error = failed_connect(server)

    assert error.args[0] == 1045
    assert server.contains(TOKEN)
    assert server.contains(TOKEN.encode())
    assert TOKEN.encode() + b"\0" in server.received
    record = server.connections[0]
    assert record.username == b"app-user"
    assert record.tls_version is None
    assert not record.client_requested_tls


def test_auth_switch_mode_sends_switch_request() -> None:
    with FakeMySQLServer("no_tls", clear_password_via="auth_switch") as server:
        failed_connect(server)

    record = server.connections[0]
    assert record.sent_auth_switch
    assert record.client_plugin == b"mysql_native_password"
    assert record.auth_responses[-1] == TOKEN.encode() + b"\0"


def test_handshake_mode_follows_up_for_password() -> None:
    # PyMySQL replies to a greeting naming mysql_clear_password with an empty
    # response; the server then requests it again with an AuthSwitchRequest.
    with FakeMySQLServer("no_tls", clear_password_via="handshake") as server:
        failed_connect(server)

    record = server.connections[0]
    assert record.auth_responses[0] == b""
    assert record.sent_auth_switch
    assert server.contains(TOKEN)


@BOTH_WAYS
def test_verified_client_refuses_no_tls(clear_password_via: ClearPasswordVia) -> None:
    with FakeMySQLServer("no_tls", clear_password_via=clear_password_via) as server:
        error = failed_connect(server, ssl=verified_context(server.ca_file))

    assert error.args[0] == 2026
    assert len(server.connections) == 1
    assert not server.contains(TOKEN)
    assert server.received == b""


@BOTH_WAYS
def test_verified_client_rejects_untrusted_certificate(
    clear_password_via: ClearPasswordVia,
) -> None:
    with FakeMySQLServer("tls_untrusted", clear_password_via=clear_password_via) as server:
        error = failed_connect(server, ssl=verified_context(server.ca_file))

    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    record = server.connections[0]
    assert record.client_requested_tls
    assert record.tls_version is None
    assert record.tls_error is not None
    assert not server.contains(TOKEN)


def test_unverified_client_leaks_to_untrusted_server() -> None:
    # PyMySQL without TLS arguments tries TLS without verification, so a
    # server with any certificate decrypts the password.
    with FakeMySQLServer("tls_untrusted") as server:
        failed_connect(server)

    record = server.connections[0]
    assert record.tls_version in ("TLSv1.2", "TLSv1.3")
    assert server.contains(TOKEN)
    assert TOKEN.encode() not in server.raw_received  # it arrived encrypted


def test_verified_client_rejects_wrong_host() -> None:
    with FakeMySQLServer("tls_wrong_host") as server:
        error = failed_connect(server, ssl=verified_context(server.ca_file))

    assert "mismatch" in str(error)
    assert not server.contains(TOKEN)


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("tls_ok", ["localhost", "127.0.0.1", "::1"]),
        ("tls_untrusted", ["localhost", "127.0.0.1", "::1"]),
        ("tls_wrong_host", [WRONG_HOST_NAME]),
    ],
)
def test_certificate_names_per_mode(mode: str, names: list[str]) -> None:
    with FakeMySQLServer(mode) as server:  # type: ignore[arg-type]
        assert server.certificate_der is not None
        certificate = x509.load_der_x509_certificate(server.certificate_der)

    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    found = [str(name.value) for name in san]
    assert found == names


@BOTH_WAYS
def test_tls_ok_decrypts_password(clear_password_via: ClearPasswordVia) -> None:
    with FakeMySQLServer(
        "tls_ok", clear_password_via=clear_password_via, auth_result="ok"
    ) as server:
        connection = connect_pymysql(server, ssl=verified_context(server.ca_file))
        connection.ping(reconnect=False)
        connection.close()

    record = server.connections[0]
    assert record.tls_version in ("TLSv1.2", "TLSv1.3")
    assert server.contains(TOKEN)
    assert TOKEN.encode() in server.received
    assert TOKEN.encode() not in server.raw_received


@pytest.mark.skipif(not legacy_tls_available(), reason="OpenSSL here cannot serve TLS 1.1")
def test_legacy_mode_rejected_by_modern_client() -> None:
    with FakeMySQLServer("tls_legacy") as server:
        error = failed_connect(server, ssl=verified_context(server.ca_file))

    assert "PROTOCOL_VERSION" in str(error).upper()
    assert not server.contains(TOKEN)


@pytest.mark.parametrize("mode", TLS_MODES)
def test_tls_modes_offer_tls(mode: str) -> None:
    with FakeMySQLServer(mode) as server, open_client(server) as client:  # type: ignore[arg-type]
        greeting = client.recv(4096)

    # 4-byte packet header, protocol version, version string and NUL, then
    # connection id (4), scramble part 1 (8) and a filler byte.
    capabilities_at = greeting.index(b"\0", 5) + 1 + 4 + 8 + 1
    capabilities = int.from_bytes(greeting[capabilities_at : capabilities_at + 2], "little")
    assert capabilities & 2048  # CLIENT_SSL


def test_silent_client_does_not_block_close() -> None:
    server = FakeMySQLServer("no_tls", timeout=30).start()
    client = open_client(server)
    try:
        client.recv(4096)  # the greeting; then the client says nothing
        server.close()
        assert not server.running
    finally:
        client.close()

    assert server.connections[0].raw == b""


def test_client_hanging_up_is_recorded() -> None:
    with FakeMySQLServer("no_tls") as server, open_client(server) as client:
        client.recv(4096)
        client.sendall(b"\x05\x00\x00\x01hello")

    assert server.raw_received == b"\x05\x00\x00\x01hello"
    assert server.contains(b"hello")
    assert not server.contains(b"absent")


def test_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        FakeMySQLServer("tls_maybe")  # type: ignore[arg-type]
