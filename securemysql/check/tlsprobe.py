"""Stage 3: the TLS upgrade inside the MySQL protocol, verified the way the SDK verifies it.

MySQL negotiates TLS inside its own protocol. The server sends a greeting, the
client replies with a 32-byte SSLRequest packet (capability flags, maximum
packet size and character set, but no user name or password), and both then
run a TLS handshake on the same socket. This stage does exactly that on the
TCP stage's socket, with the SDK's own context (certificate chain and host
name verified, TLS 1.2 or newer), and closes the connection after the
handshake. No credential is ever sent.

When the certificate does not verify, a second connection repeats the
handshake with verification off, only to read the certificate for the report.
Nothing follows that handshake either.
"""

from __future__ import annotations

import socket
import ssl
from datetime import datetime, timezone
from typing import Any, Optional

from cryptography import x509

from securemysql.check import certinfo
from securemysql.check.stage import FactRecorder, RunState, StageFailed
from securemysql.tls import TLSConfig, default_ca_bundle_pem
from securemysql.tls.handshake import (
    Greeting,
    ServerErrorPacket,
    parse_greeting,
    read_greeting,
    ssl_request_packet,
)

# Re-exported: the greeting parsing used to live here.
__all__ = [
    "Greeting",
    "ServerErrorPacket",
    "parse_greeting",
    "peer_chain",
    "read_greeting",
    "run_tls",
    "ssl_request_packet",
]

# OpenSSL verification codes for a certificate that does not name the host.
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64
_X509_V_ERR_CERT_HAS_EXPIRED = 10


def peer_chain(tls_socket: ssl.SSLSocket, *, verified: bool) -> list[bytes]:
    """Return the server's certificate chain in DER form, leaf first.

    ``verified=True`` returns the chain OpenSSL built and verified (ending at
    the trusted CA); ``False`` returns the certificates the server sent.
    Python 3.13 has public methods for both. Python 3.10 to 3.12 have them on
    the private ``_sslobj`` only. Without either, the list contains the leaf alone.
    """
    name = "get_verified_chain" if verified else "get_unverified_chain"
    method = getattr(tls_socket, name, None)
    if method is None:
        method = getattr(getattr(tls_socket, "_sslobj", None), name, None)

    if method is not None:
        chain = [_as_der(item) for item in method() or ()]
        if chain:
            return chain

    leaf = tls_socket.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _as_der(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    # Python 3.10 to 3.12 return _ssl.Certificate objects; 2 is _ssl.ENCODING_DER.
    der = item.public_bytes(2)
    if not isinstance(der, bytes):
        raise TypeError(f"unexpected certificate object {type(item).__name__}")
    return der


def run_tls(state: RunState, facts: FactRecorder) -> None:
    """Upgrade the TCP stage's connection to TLS with the SDK's verification; report what it saw."""
    options = state.options
    sock = state.take_socket()
    if sock is None:
        raise RuntimeError("the TLS stage needs the TCP stage's socket")

    tls_config = TLSConfig(ca_file=options.ssl_ca)
    context = tls_config.create_ssl_context()
    try:
        _greet(sock, state, facts)
        facts.add("ca", "trusted CAs", tls_config.ca_source)
        sock.sendall(ssl_request_packet())
        tls_socket = context.wrap_socket(sock, server_hostname=options.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise _report_unverified(state, facts, exc) from exc
    except ssl.SSLError as exc:
        raise _handshake_failure(options.host, exc) from exc
    except (OSError, ValueError, ServerErrorPacket) as exc:
        raise _connection_failure(options.host, options.port, options.timeout, exc) from exc
    finally:
        sock.close()  # a no-op after wrap_socket, which takes the connection over

    with tls_socket:
        _report_verified(state, facts, tls_socket)


def _greet(sock: socket.socket, state: RunState, facts: FactRecorder) -> None:
    greeting = read_greeting(sock)
    facts.add(
        "server_version",
        "server greeting",
        greeting.server_version,
        f"{greeting.server_version} (connection id {greeting.connection_id})",
    )
    facts.add(
        "tls_offered",
        "TLS offered",
        greeting.offers_tls,
        "yes" if greeting.offers_tls else "no",
        status="pass" if greeting.offers_tls else "fail",
    )
    if not greeting.offers_tls:
        raise StageFailed(
            "the server does not offer TLS",
            cause=(
                f"The server at {state.options.host}:{state.options.port} does not offer TLS "
                "in its greeting, so an access token could only travel in clear text."
            ),
            fix=(
                "Enable TLS on the server (ssl_cert, ssl_key and ssl_ca, or have_ssl=YES). "
                "Azure Database for MySQL always offers TLS, so also check that --host and "
                "--port lead to the server you meant and not to a proxy."
            ),
        )


def _report_verified(state: RunState, facts: FactRecorder, tls_socket: ssl.SSLSocket) -> None:
    options = state.options
    version = tls_socket.version() or "unknown"
    cipher = (tls_socket.cipher() or ("unknown",))[0]
    facts.add("protocol", "protocol", version)
    facts.add("cipher", "cipher", cipher)

    chain = [certinfo.load_der(der) for der in peer_chain(tls_socket, verified=True)]
    now = datetime.now(timezone.utc)
    if chain:
        _record_certificate(facts, chain, now, chain_source="verified")

    facts.add(
        "chain_verified",
        "chain check",
        True,
        "verified against the trusted CAs",
        status="pass",
    )
    facts.add(
        "hostname_verified",
        "host name check",
        True,
        f"the certificate is valid for {options.host}",
        status="pass",
    )
    facts.summary = f"{version}, {cipher}; certificate chain and host name verified"


def _record_certificate(
    facts: FactRecorder,
    chain: list[x509.Certificate],
    now: datetime,
    *,
    chain_source: str,
) -> None:
    leaf = certinfo.describe_certificate(chain[0], now)
    facts.add("certificate", "certificate", leaf, _certificate_text(leaf))

    described = certinfo.describe_chain(chain)
    source_text = {
        "verified": "as verified, leaf first",
        "presented": "as the server sent it, leaf first",
    }[chain_source]
    facts.add(
        "chain",
        "issuer chain",
        {"source": chain_source, "certificates": described},
        f"({source_text}) " + " <- ".join(item["subject"] for item in described),
    )


def _certificate_text(leaf: dict[str, Any]) -> str:
    days = leaf["days_until_expiry"]
    expiry = f"expired {-days} days ago" if days < 0 else f"expires in {days} days"
    names = ", ".join(leaf["names"]) or "no subjectAltName entries"
    return (
        f"subject {leaf['subject']}; names {names}; issuer {leaf['issuer']}; "
        f"{expiry} ({leaf['not_after']})"
    )


def _report_unverified(
    state: RunState, facts: FactRecorder, error: ssl.SSLCertVerificationError
) -> StageFailed:
    """Explain a failed verification from a second, unverified handshake; return the failure."""
    options = state.options
    reason = str(error.verify_message or error.reason or error).rstrip(". ")
    hostname_failed = error.verify_code in (
        _X509_V_ERR_HOSTNAME_MISMATCH,
        _X509_V_ERR_IP_ADDRESS_MISMATCH,
    )

    try:
        version, cipher, presented_der = _unverified_handshake(state)
    except (OSError, ValueError, ServerErrorPacket) as exc:
        facts.add("certificate", "certificate", None, f"could not be read: {exc}")
        return _verification_failure(state, reason, hostname_failed, names=None)

    facts.add("protocol", "protocol", version)
    facts.add("cipher", "cipher", cipher)
    presented = [certinfo.load_der(der) for der in presented_der]
    now = datetime.now(timezone.utc)
    if not presented:
        return _verification_failure(state, reason, hostname_failed, names=None)

    _record_certificate(facts, presented, now, chain_source="presented")
    names = certinfo.certificate_names(presented[0])

    if hostname_failed:
        # OpenSSL checks the host name before the signatures, so check those here.
        _chain, chain_error = certinfo.build_chain(presented, _trusted_anchors(options.ssl_ca), now)
        chain_ok = chain_error is None
        chain_text = "verified against the trusted CAs" if chain_ok else str(chain_error)
        hostname_ok = False
    else:
        chain_ok = False
        chain_text = f"failed: {reason}"
        hostname_ok = certinfo.hostname_matches(options.host, names)

    facts.add("chain_verified", "chain check", chain_ok, chain_text, status=_mark(chain_ok))
    hostname_text = (
        f"the certificate is valid for {options.host}"
        if hostname_ok
        else f"the certificate is not valid for {options.host}"
    )
    facts.add(
        "hostname_verified",
        "host name check",
        hostname_ok,
        hostname_text,
        status=_mark(hostname_ok),
    )
    return _verification_failure(state, reason, hostname_failed, names=names)


def _unverified_handshake(state: RunState) -> tuple[str, str, list[bytes]]:
    """Connect again and run the handshake without verification; return version, cipher, chain.

    Only the SSLRequest packet is sent before the handshake and nothing after it.
    """
    options = state.options
    target = state.connected
    if target is None:
        raise OSError("no address to connect to")

    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # this handshake only reads the certificate

    with socket.socket(target.family, socket.SOCK_STREAM) as sock:
        sock.settimeout(options.timeout)
        sock.connect(target.sockaddr)
        read_greeting(sock)
        sock.sendall(ssl_request_packet())
        with probe.wrap_socket(sock, server_hostname=options.host) as tls_socket:
            version = tls_socket.version() or "unknown"
            cipher = (tls_socket.cipher() or ("unknown",))[0]
            return version, cipher, peer_chain(tls_socket, verified=False)


def _trusted_anchors(ssl_ca: Optional[str]) -> list[x509.Certificate]:
    if ssl_ca is not None:
        with open(ssl_ca, "rb") as ca_file:
            return certinfo.load_pem_bundle(ca_file.read())
    return certinfo.load_pem_bundle(default_ca_bundle_pem().encode("ascii"))


def _mark(ok: bool) -> str:
    return "pass" if ok else "fail"


def _verification_failure(
    state: RunState, reason: str, hostname_failed: bool, *, names: Optional[list[str]]
) -> StageFailed:
    options = state.options
    listed = f" It lists: {', '.join(names)}." if names else ""

    if hostname_failed:
        return StageFailed(
            "the certificate is not valid for this host name",
            cause=(f"The server certificate does not name {options.host!r} ({reason}).{listed}"),
            fix=(
                "Connect with a host name that the certificate lists: for Azure Database for "
                "MySQL, the server's name ending in .mysql.database.azure.com. When reaching "
                "the server through an IP address or another DNS name (a private endpoint or "
                "tunnel), use the server's own DNS name, resolved to that address by DNS or "
                "/etc/hosts."
            ),
        )

    ca = options.ssl_ca or "the default CA bundle (certifi plus the Azure Database for MySQL roots)"
    return StageFailed(
        "the certificate chain does not verify",
        cause=f"The server certificate does not verify against {ca}: {reason}.{listed}",
        fix=(
            "Pass --ssl-ca the PEM file of the CA that issued the server certificate (the "
            "issuer chain above names it). For Azure Database for MySQL, the default bundle "
            "holds the DigiCert and Microsoft roots; if the issuer is something else, a proxy "
            "or TLS-inspecting firewall sits in between, so connect without it."
            if "expired" not in reason.lower()
            else "The server's certificate has expired: the server administrator must renew "
            "it. Also check this machine's clock."
        ),
    )


def _handshake_failure(host: str, exc: ssl.SSLError) -> StageFailed:
    detail = str(exc.reason or exc)
    if any(word in detail.lower() for word in ("version", "protocol")):
        return StageFailed(
            "TLS handshake failed: no common TLS version",
            cause=f"The TLS handshake with {host} failed ({detail}).",
            fix=(
                "securemysql requires TLS 1.2 or newer. Set the server's tls_version to "
                "include TLSv1.2 or TLSv1.3."
            ),
        )
    return StageFailed(
        "TLS handshake failed",
        cause=f"The TLS handshake with {host} failed ({detail}).",
        fix=(
            "Check that the server's TLS configuration offers TLS 1.2+ with a current cipher "
            "suite, and that nothing between client and server interferes with TLS."
        ),
    )


def _connection_failure(host: str, port: int, timeout: float, exc: BaseException) -> StageFailed:
    if isinstance(exc, ServerErrorPacket):
        return StageFailed(
            f"the server refused the connection with error {exc.error_number}",
            cause=f"The server sent error {exc.error_number}: {exc.message}",
            fix=_server_error_fix(exc.error_number),
            error_number=exc.error_number,
        )

    if isinstance(exc, (socket.timeout, TimeoutError)):
        cause = f"The server at {host}:{port} sent no greeting within {timeout:g} s."
    elif isinstance(exc, ValueError):
        cause = f"The service at {host}:{port} does not speak the MySQL protocol ({exc})."
    else:
        cause = f"The connection to {host}:{port} broke during the greeting or handshake ({exc})."
    return StageFailed(
        "no MySQL greeting or TLS handshake",
        cause=cause,
        fix="Check that --host and --port lead to a MySQL server and not to another service.",
    )


def _server_error_fix(error_number: int) -> str:
    fixes = {
        1040: "The server has reached max_connections; close idle connections or raise it.",
        1129: (
            "The server blocks this client host after too many failed connections; an "
            "administrator runs FLUSH HOSTS (or mysqladmin flush-hosts)."
        ),
        1130: "No account on the server allows connections from this client host.",
    }
    return fixes.get(error_number, "See the server's error message above.")
