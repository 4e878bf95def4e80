"""TLS policy: CA bundles, context hardening, configuration checks and failure translation.

Handshakes run against the fake MySQL server in tests/fakeserver.py, with
PyMySQL and the pure-Python mysql-connector as clients.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import certifi
import mysql.connector
import mysql.connector.errors
import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from securemysql import tls
from securemysql.errors import (
    CertificateVerificationError,
    ConfigurationError,
    HostnameMismatchError,
    InsecureConfigurationError,
    TLSError,
    TLSNotOfferedError,
    TLSVersionError,
)
from securemysql.redaction import REDACTED
from securemysql.tls import (
    AZURE_ROOT_CAS,
    MINIMUM_TLS_VERSION,
    HostnameOverrideContext,
    TLSConfig,
    default_ca_bundle,
    default_ca_bundle_description,
    default_ca_bundle_pem,
    fetch_server_certificate,
    is_verified_tls_socket,
    system_ca_bundle_file,
    tls_info_from_socket,
    translate_tls_failure,
)
from tests.fakeserver import WRONG_HOST_NAME, FakeMySQLServer, legacy_tls_available

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0bHMtdGVzdCJ9.c2lnbmF0dXJlLXRscw"
DIGICERT_GLOBAL_ROOT_CA_SHA256 = (
    "43:48:A0:E9:44:4C:78:CB:26:5E:05:8D:5E:89:44:B4:"
    "D8:4F:96:62:BD:26:DB:25:7F:89:34:A4:43:C7:01:61"
)
SHIPPED_ROOTS = pathlib.Path(tls.__file__).parent.parent / "data" / "azure-root-cas.pem"


PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def fingerprint(certificate: x509.Certificate) -> str:
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def der_fingerprint(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def load_pem_file(path: str | pathlib.Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pathlib.Path(path).read_bytes())


def pem_file_fingerprints(path: str | pathlib.Path) -> set[str]:
    # Fingerprints without parsing: some certifi roots have serial numbers that
    # cryptography warns about and may reject in a later release.
    blocks = PEM_BLOCK.findall(pathlib.Path(path).read_text(encoding="ascii"))
    return {der_fingerprint(ssl.PEM_cert_to_DER_cert(block)) for block in blocks}


def bundle_certificates(path: str) -> dict[str, str]:
    """Map fingerprint to common name for the Azure roots found in a PEM file."""
    found = {}
    for block in PEM_BLOCK.findall(pathlib.Path(path).read_text(encoding="ascii")):
        der = ssl.PEM_cert_to_DER_cert(block)
        if der_fingerprint(der) in AZURE_ROOT_CAS.values():
            found[der_fingerprint(der)] = common_name(x509.load_der_x509_certificate(der))
    return found


def pymysql_connect(server: FakeMySQLServer, **kwargs: Any) -> pymysql.Connection:
    return pymysql.connect(
        host=server.host,
        port=server.port,
        user="app-user",
        password=TOKEN,
        connect_timeout=5,
        read_timeout=5,
        **kwargs,
    )


def pymysql_failure(server: FakeMySQLServer, context: ssl.SSLContext) -> BaseException:
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql_connect(server, ssl=context)
    return raised.value


def mysql_connector_failure(server: FakeMySQLServer, **kwargs: Any) -> BaseException:
    with pytest.raises(mysql.connector.errors.Error) as raised:
        mysql.connector.connect(
            host=server.host,
            port=server.port,
            user="app-user",
            password=TOKEN,
            use_pure=True,
            ssl_ca=server.ca_file,
            ssl_verify_cert=True,
            ssl_verify_identity=True,
            connection_timeout=5,
            **kwargs,
        )
    return raised.value


def c_extension_error(message: str) -> mysql.connector.errors.Error:
    # Text measured from mysql-connector-python 26.10.0's C extension
    # (libmysqlclient, OpenSSL 3.0) against tests/fakeserver.py.
    return mysql.connector.errors.InterfaceError(msg=message, errno=2026, sqlstate="HY000")


# --- Default CA bundle -----------------------------------------------------------


def test_shipped_roots_match_fingerprints() -> None:
    shipped = {common_name(cert): fingerprint(cert) for cert in load_pem_file(SHIPPED_ROOTS)}

    assert shipped == dict(AZURE_ROOT_CAS)
    assert shipped["DigiCert Global Root CA"] == DIGICERT_GLOBAL_ROOT_CA_SHA256


def test_default_bundle_contains_azure_roots() -> None:
    found = bundle_certificates(default_ca_bundle())

    for name, expected in AZURE_ROOT_CAS.items():
        assert found.get(expected) == name


def test_default_bundle_contains_certifi() -> None:
    bundle = pem_file_fingerprints(default_ca_bundle())
    certifi_roots = pem_file_fingerprints(certifi.where())

    assert certifi_roots <= bundle
    assert len(certifi_roots) > 50


def test_default_bundle_names_added_roots() -> None:
    certifi_roots = pem_file_fingerprints(certifi.where())
    description = default_ca_bundle_description()

    assert f"certifi {certifi.__version__}" in description
    for name, expected in AZURE_ROOT_CAS.items():
        assert (f"+ {name}" in description) == (expected not in certifi_roots), name


def test_default_bundle_file_matches_pem() -> None:
    path = default_ca_bundle()

    assert pathlib.Path(path).read_text(encoding="ascii") == default_ca_bundle_pem()
    assert default_ca_bundle() == path


def test_default_bundle_file_is_private() -> None:
    path = default_ca_bundle()

    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert os.stat(path).st_uid == os.getuid()


def test_default_bundle_rewritten_when_removed() -> None:
    old_path = default_ca_bundle()
    shutil.rmtree(os.path.dirname(old_path))

    new_path = default_ca_bundle()

    assert os.path.isfile(new_path)
    assert pathlib.Path(new_path).read_text(encoding="ascii") == default_ca_bundle_pem()


FORK_SCRIPT = """
import os, sys
from securemysql import tls
path = tls.default_ca_bundle()
child = os.fork()
if child == 0:
    tls.default_ca_bundle()
    sys.exit(0)  # runs the child's exit handlers
os.waitpid(child, 0)
print(path)
print(os.path.isfile(path))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_bundle_file_removed_by_creator_only() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    path, exists_after_child_exit = result.stdout.split()

    assert exists_after_child_exit == "True"
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


def test_default_context_trusts_azure_roots() -> None:
    context = TLSConfig().create_ssl_context()
    trusted = {der_fingerprint(der) for der in context.get_ca_certs(binary_form=True)}

    assert set(AZURE_ROOT_CAS.values()) <= trusted


def test_default_context_rejects_test_ca() -> None:
    with FakeMySQLServer("tls_ok") as server:
        error = pymysql_failure(server, TLSConfig().create_ssl_context())

    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert not server.contains(TOKEN)


# --- Context hardening -------------------------------------------------------------


def test_context_requires_verification() -> None:
    context = TLSConfig().create_ssl_context()

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == MINIMUM_TLS_VERSION == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.protocol == ssl.PROTOCOL_TLS_CLIENT


def test_context_ignores_sslkeylogfile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))

    context = TLSConfig().create_ssl_context()

    assert context.keylog_filename is None


def test_ca_file_context_connects_by_ip() -> None:
    # The client connects to 127.0.0.1, so this checks the certificate's IP address entry.
    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        config = TLSConfig(ca_file=server.ca_file)
        connection = pymysql_connect(server, ssl=config.create_ssl_context())
        try:
            assert is_verified_tls_socket(connection._sock)
            info = tls_info_from_socket(connection._sock)
        finally:
            connection.close()

    assert info.version in ("TLSv1.2", "TLSv1.3")
    assert info.cipher
    assert info.peer_names[:2] == ("localhost", "127.0.0.1")
    assert server.contains(TOKEN)


def test_ca_file_context_rejects_wrong_ip() -> None:
    with FakeMySQLServer("tls_wrong_host") as server:
        error = pymysql_failure(server, TLSConfig(ca_file=server.ca_file).create_ssl_context())

    assert "IP address mismatch" in str(error)
    assert not server.contains(TOKEN)


def test_server_hostname_overrides_checked_name() -> None:
    with FakeMySQLServer("tls_wrong_host", auth_result="ok") as server:
        config = TLSConfig(ca_file=server.ca_file, server_hostname=WRONG_HOST_NAME)
        context = config.create_ssl_context()
        connection = pymysql_connect(server, ssl=context)
        try:
            assert is_verified_tls_socket(connection._sock)
            assert connection._sock.server_hostname == WRONG_HOST_NAME
        finally:
            connection.close()

    assert isinstance(context, HostnameOverrideContext)


def test_server_hostname_still_checked() -> None:
    with FakeMySQLServer("tls_ok") as server:
        config = TLSConfig(ca_file=server.ca_file, server_hostname=WRONG_HOST_NAME)
        error = pymysql_failure(server, config.create_ssl_context())

    assert "Hostname mismatch" in str(error)
    assert not server.contains(TOKEN)


def test_ca_path_context_connects(tmp_path: pathlib.Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to hash a CA directory")

    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        shutil.copy(server.ca_file, tmp_path / "test-ca.pem")
        subprocess.run([openssl, "rehash", str(tmp_path)], check=True, capture_output=True)
        connection = pymysql_connect(
            server, ssl=TLSConfig(ca_path=str(tmp_path)).create_ssl_context()
        )
        connection.close()

    assert server.contains(TOKEN)


def test_system_trust_store_honours_ssl_cert_file(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        config = TLSConfig(use_system_trust_store=True)

        assert config.ca_bundle_file() == server.ca_file
        assert server.ca_file in config.ca_source
        connection = pymysql_connect(server, ssl=config.create_ssl_context())
        connection.close()


def test_system_bundle_file_found() -> None:
    path = system_ca_bundle_file()

    if path is None:
        pytest.skip("this platform has no system CA bundle file")
    assert os.path.isfile(path)
    assert pem_file_fingerprints(path)


def test_user_context_returned_unchanged() -> None:
    context = ssl.create_default_context()
    config = TLSConfig(ssl_context=context)

    assert config.create_ssl_context() is context
    assert config.ca_bundle_file() is None
    assert config.ca_source == "the ssl_context passed by the caller"


def test_user_context_weakened_later_rejected() -> None:
    context = ssl.create_default_context()
    config = TLSConfig(ssl_context=context)
    context.check_hostname = False

    with pytest.raises(InsecureConfigurationError, match="check_hostname"):
        config.create_ssl_context()


# --- Configuration checks -----------------------------------------------------


def test_missing_ca_file_named(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "absent.pem"

    with pytest.raises(ConfigurationError) as raised:
        TLSConfig(ca_file=str(missing))

    assert str(missing) in str(raised.value)
    assert "ssl_ca=" in str(raised.value)
    assert "ca_file=" not in str(raised.value)


def test_ca_file_without_certificates(tmp_path: pathlib.Path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")

    with pytest.raises(ConfigurationError, match="PEM"):
        TLSConfig(ca_file=str(not_pem))


def test_missing_ca_path_named(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "certs"

    with pytest.raises(ConfigurationError) as raised:
        TLSConfig(ca_path=str(missing))

    assert str(missing) in str(raised.value)


def test_path_objects_accepted() -> None:
    with FakeMySQLServer("no_tls") as server:
        config = TLSConfig(ca_file=pathlib.Path(server.ca_file))  # type: ignore[arg-type]

        assert config.ca_file == server.ca_file
        assert config.ca_bundle_file() == server.ca_file


@pytest.mark.parametrize(
    "arguments",
    [
        {"ca_file": "CA", "use_system_trust_store": True},
        {"ca_file": "CA", "ca_path": "DIR"},
        {"ca_path": "DIR", "ssl_context": "CONTEXT"},
        {"ssl_context": "CONTEXT", "use_system_trust_store": True},
    ],
)
def test_several_trust_sources_rejected(arguments: dict[str, Any], tmp_path: pathlib.Path) -> None:
    with FakeMySQLServer("no_tls") as server:
        values = {
            "CA": server.ca_file,
            "DIR": str(tmp_path),
            "CONTEXT": ssl.create_default_context(),
        }
        resolved = {key: values.get(value, value) for key, value in arguments.items()}

        with pytest.raises(ConfigurationError, match="at most one trust source"):
            TLSConfig(**resolved)


def unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def no_hostname_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    return context


def old_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    return context


def any_version_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    return context


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("make_context", "reason"),
    [
        (unverified_context, "verify_mode is CERT_NONE"),
        (no_hostname_context, "check_hostname is False"),
        (old_tls_context, "minimum_version is TLSv1_1"),
        (any_version_context, "minimum_version is MINIMUM_SUPPORTED"),
    ],
)
def test_insecure_user_context_rejected(make_context: Any, reason: str) -> None:
    with pytest.raises(InsecureConfigurationError, match=reason):
        TLSConfig(ssl_context=make_context())


def test_tls13_only_context_accepted() -> None:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    assert TLSConfig(ssl_context=context).create_ssl_context() is context


def test_server_context_rejected() -> None:
    with pytest.raises(ConfigurationError, match="PROTOCOL_TLS_SERVER"):
        TLSConfig(ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


def test_non_context_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"ssl\.SSLContext"):
        TLSConfig(ssl_context="verify")  # type: ignore[arg-type]


def test_server_hostname_with_context_rejected() -> None:
    with pytest.raises(ConfigurationError, match="server_hostname cannot be combined"):
        TLSConfig(ssl_context=ssl.create_default_context(), server_hostname="db.example.com")


@pytest.mark.parametrize("name", ["", "db example.com", "db\0.example.com"])
def test_bad_server_hostname_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match="server_hostname"):
        TLSConfig(server_hostname=name)


def test_repr_is_short_and_honest() -> None:
    with FakeMySQLServer("no_tls") as server:
        config = TLSConfig(ca_file=server.ca_file, server_hostname="db.example.com")

        assert repr(config) == (
            f"TLSConfig(trust='CA file {server.ca_file}', server_hostname='db.example.com')"
        )
    assert repr(TLSConfig()) == f"TLSConfig(trust={default_ca_bundle_description()!r})"


def test_ca_bundle_file_per_source(tmp_path: pathlib.Path) -> None:
    assert TLSConfig().ca_bundle_file() == default_ca_bundle()
    assert TLSConfig(ca_path=str(tmp_path)).ca_bundle_file() is None
    assert TLSConfig(ca_path=str(tmp_path)).ca_source == f"CA directory {tmp_path}"


# --- Inspecting sockets -----------------------------------------------------------


def test_unverified_socket_not_verified() -> None:
    # PyMySQL without TLS arguments uses TLS without verification.
    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        connection = pymysql_connect(server)
        try:
            assert isinstance(connection._sock, ssl.SSLSocket)
            assert not is_verified_tls_socket(connection._sock)
        finally:
            connection.close()


def test_plain_socket_not_verified() -> None:
    with FakeMySQLServer("no_tls", auth_result="ok") as server:
        connection = pymysql_connect(server)
        try:
            assert not isinstance(connection._sock, ssl.SSLSocket)
            assert not is_verified_tls_socket(connection._sock)
        finally:
            connection.close()

    assert not is_verified_tls_socket(object())


def test_socket_before_handshake_not_verified() -> None:
    context = TLSConfig().create_ssl_context()
    with socket.socket() as raw:
        unconnected = context.wrap_socket(
            raw, server_hostname="db.example.com", do_handshake_on_connect=False
        )

        assert not is_verified_tls_socket(unconnected)
        with pytest.raises(ValueError, match="handshake"):
            tls_info_from_socket(unconnected)


def test_tls12_socket_verified() -> None:
    with FakeMySQLServer("tls_ok", auth_result="ok") as server:
        context = TLSConfig(ca_file=server.ca_file).create_ssl_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        connection = pymysql_connect(server, ssl=context)
        try:
            assert is_verified_tls_socket(connection._sock)
            assert tls_info_from_socket(connection._sock).version == "TLSv1.2"
        finally:
            connection.close()


# --- Translating failures -----------------------------------------------------------


@pytest.fixture
def untrusted_server() -> Iterator[FakeMySQLServer]:
    with FakeMySQLServer("tls_untrusted") as server:
        yield server


@pytest.fixture
def wrong_host_server() -> Iterator[FakeMySQLServer]:
    with FakeMySQLServer("tls_wrong_host") as server:
        yield server


def test_pymysql_untrusted_certificate(untrusted_server: FakeMySQLServer) -> None:
    config = TLSConfig(ca_file=untrusted_server.ca_file)
    error = pymysql_failure(untrusted_server, config.create_ssl_context())

    translated = translate_tls_failure(error, hostname="127.0.0.1", ca_source=config.ca_source)

    assert isinstance(translated, CertificateVerificationError)
    assert translated.ca_source == config.ca_source
    assert config.ca_source in str(translated)
    assert "unable to get local issuer certificate" in str(translated)
    assert "ssl_ca=" in str(translated)
    assert translated.issuer is None


def test_untrusted_certificate_names_issuer(untrusted_server: FakeMySQLServer) -> None:
    config = TLSConfig(ca_file=untrusted_server.ca_file)
    error = pymysql_failure(untrusted_server, config.create_ssl_context())
    assert untrusted_server.certificate_der is not None
    issuer = x509.load_der_x509_certificate(untrusted_server.certificate_der).issuer

    translated = translate_tls_failure(
        error,
        hostname="127.0.0.1",
        ca_source=config.ca_source,
        peer_certificate=untrusted_server.certificate_der,
    )

    assert isinstance(translated, CertificateVerificationError)
    assert translated.issuer == issuer.rfc4514_string()
    assert issuer.rfc4514_string() in str(translated)


def test_mysql_connector_untrusted_certificate(untrusted_server: FakeMySQLServer) -> None:
    error = mysql_connector_failure(untrusted_server)

    translated = translate_tls_failure(error, hostname="127.0.0.1", ca_source="CA file x")

    assert isinstance(translated, CertificateVerificationError)
    assert not untrusted_server.contains(TOKEN)


def test_pymysql_wrong_host(wrong_host_server: FakeMySQLServer) -> None:
    config = TLSConfig(ca_file=wrong_host_server.ca_file)
    error = pymysql_failure(wrong_host_server, config.create_ssl_context())

    translated = translate_tls_failure(
        error,
        hostname="127.0.0.1",
        ca_source=config.ca_source,
        peer_certificate=wrong_host_server.certificate_der,
    )

    assert isinstance(translated, HostnameMismatchError)
    assert translated.hostname == "127.0.0.1"
    assert translated.certificate_names == (WRONG_HOST_NAME,)
    assert WRONG_HOST_NAME in str(translated)
    assert "server_hostname=" in str(translated)


def test_mysql_connector_wrong_host(wrong_host_server: FakeMySQLServer) -> None:
    error = mysql_connector_failure(wrong_host_server)

    translated = translate_tls_failure(error, hostname="127.0.0.1", ca_source="CA file x")

    assert isinstance(translated, HostnameMismatchError)
    assert translated.certificate_names == ()


def test_c_extension_wrong_host_needs_certificate(wrong_host_server: FakeMySQLServer) -> None:
    # The C extension reports a wrong host name with the same text as an untrusted CA.
    error = c_extension_error(
        "SSL connection error: error:0A000086:SSL routines::certificate verify failed"
    )

    without_certificate = translate_tls_failure(error, hostname="127.0.0.1", ca_source="x")
    with_certificate = translate_tls_failure(
        error,
        hostname="127.0.0.1",
        ca_source="x",
        peer_certificate=wrong_host_server.certificate_der,
    )

    assert isinstance(without_certificate, CertificateVerificationError)
    assert isinstance(with_certificate, HostnameMismatchError)
    assert with_certificate.certificate_names == (WRONG_HOST_NAME,)


def test_c_extension_untrusted_with_matching_name(untrusted_server: FakeMySQLServer) -> None:
    error = c_extension_error(
        "SSL connection error: error:0A000086:SSL routines::certificate verify failed"
    )

    translated = translate_tls_failure(
        error,
        hostname="localhost",
        ca_source="x",
        peer_certificate=untrusted_server.certificate_der,
    )

    assert isinstance(translated, CertificateVerificationError)


def test_untrusted_chain_wins_over_name(untrusted_server: FakeMySQLServer) -> None:
    # The certificate lists localhost and 127.0.0.1 only, and its CA is not trusted.
    config = TLSConfig(ca_file=untrusted_server.ca_file, server_hostname=WRONG_HOST_NAME)
    error = pymysql_failure(untrusted_server, config.create_ssl_context())

    translated = translate_tls_failure(
        error,
        hostname=WRONG_HOST_NAME,
        ca_source=config.ca_source,
        peer_certificate=untrusted_server.certificate_der,
    )

    assert isinstance(translated, CertificateVerificationError)
    assert "unable to get local issuer certificate" in str(translated)
    assert translated.issuer is not None
    assert translated.issuer in str(translated)


def test_chain_reason_in_text_wins_over_name(wrong_host_server: FakeMySQLServer) -> None:
    # A driver error whose chained ssl.SSLCertVerificationError was lost on the way.
    error = c_extension_error(
        "SSL connection error: certificate verify failed: unable to get local issuer certificate"
    )

    translated = translate_tls_failure(
        error,
        hostname="127.0.0.1",
        ca_source="x",
        peer_certificate=wrong_host_server.certificate_der,
    )

    assert isinstance(translated, CertificateVerificationError)
    assert "unable to get local issuer certificate" in str(translated)


@pytest.mark.parametrize("client", ["pymysql", "mysql_connector"])
def test_no_tls_translated(client: str) -> None:
    with FakeMySQLServer("no_tls") as server:
        if client == "pymysql":
            error = pymysql_failure(server, TLSConfig(ca_file=server.ca_file).create_ssl_context())
        else:
            error = mysql_connector_failure(server)

    translated = translate_tls_failure(error, hostname="db.example.com", ca_source="x")

    assert isinstance(translated, TLSNotOfferedError)
    assert "Enable TLS on the server" in str(translated)
    assert "never falls back" in str(translated)
    assert not server.contains(TOKEN)


def test_clear_password_without_tls_translated() -> None:
    # securemysql's mysql-connector driver names this auth plugin up front.
    with FakeMySQLServer("no_tls") as server:
        error = mysql_connector_failure(server, auth_plugin="mysql_clear_password")

    translated = translate_tls_failure(error, hostname="db.example.com", ca_source="x")

    assert "not supported over insecure channels" in str(error)
    assert isinstance(translated, TLSNotOfferedError)
    assert "Enable TLS on the server" in str(translated)
    assert not server.contains(TOKEN)


def test_c_extension_no_tls_translated() -> None:
    error = c_extension_error(
        "SSL connection error: SSL is required but the server doesn't support it"
    )

    assert isinstance(translate_tls_failure(error, hostname="h", ca_source="x"), TLSNotOfferedError)


@pytest.mark.skipif(not legacy_tls_available(), reason="OpenSSL here cannot serve TLS 1.1")
@pytest.mark.parametrize("client", ["pymysql", "mysql_connector"])
def test_old_tls_translated(client: str) -> None:
    with FakeMySQLServer("tls_legacy") as server:
        if client == "pymysql":
            error = pymysql_failure(server, TLSConfig(ca_file=server.ca_file).create_ssl_context())
        else:
            error = mysql_connector_failure(server)

    translated = translate_tls_failure(error, hostname="h", ca_source="x")

    assert isinstance(translated, TLSVersionError)
    assert "TLS 1.2" in str(translated)


def test_c_extension_old_tls_translated() -> None:
    error = c_extension_error(
        "SSL connection error: error:0A00042E:SSL routines::tlsv1 alert protocol version"
    )

    assert isinstance(translate_tls_failure(error, hostname="h", ca_source="x"), TLSVersionError)


def test_generic_ssl_error_translated() -> None:
    error = c_extension_error("SSL connection error: error:0A000126:SSL routines::unexpected eof")

    translated = translate_tls_failure(error, hostname="h", ca_source="default bundle")

    assert type(translated) is TLSError
    assert "unexpected eof" in str(translated)
    assert "default bundle" in str(translated)


def test_direct_verification_error_translated() -> None:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate expired")
    error.verify_code = 10
    error.verify_message = "certificate has expired"

    translated = translate_tls_failure(error, hostname="h", ca_source="x")

    assert isinstance(translated, CertificateVerificationError)
    assert "certificate has expired" in str(translated)


def test_driver_text_redacted() -> None:
    error = c_extension_error(f"SSL connection error: certificate verify failed password={TOKEN}")

    translated = translate_tls_failure(error, hostname="h", ca_source="x")

    assert translated is not None
    assert TOKEN not in str(translated)
    assert REDACTED in str(translated)


@pytest.mark.parametrize(
    "error",
    [
        pymysql.err.OperationalError(1045, "Access denied for user 'u'@'h' (using password: YES)"),
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'h' (timed out)"),
        ConnectionRefusedError(111, "Connection refused"),
        ValueError("bad port"),
    ],
)
def test_other_failures_not_translated(error: BaseException) -> None:
    assert translate_tls_failure(error, hostname="h", ca_source="x") is None


# --- Fetching the certificate for diagnostics -----------------------------------------


def test_fetch_certificate_sends_no_credentials(untrusted_server: FakeMySQLServer) -> None:
    der = fetch_server_certificate(untrusted_server.host, untrusted_server.port, timeout=5)
    untrusted_server.close()  # waits until the server has recorded the connection

    assert der == untrusted_server.certificate_der
    record = untrusted_server.connections[0]
    assert record.client_requested_tls
    assert record.tls_version is not None
    assert record.username is None
    assert record.auth_responses == []


def test_fetch_certificate_from_no_tls() -> None:
    with FakeMySQLServer("no_tls") as server:
        assert fetch_server_certificate(server.host, server.port, timeout=5) is None


def test_fetch_certificate_rejects_non_mysql() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def greet_with_http() -> None:
        client, _ = listener.accept()
        with client:
            client.sendall(b"\x08\x00\x00\x00HTTP/1.1")

    thread = threading.Thread(target=greet_with_http, daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match="protocol version 10"):
            fetch_server_certificate("127.0.0.1", listener.getsockname()[1], timeout=5)
    finally:
        thread.join(5)
        listener.close()
