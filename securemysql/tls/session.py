"""Inspecting TLS sessions: the negotiated parameters of a socket, and the server certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Optional

from securemysql.tls.handshake import open_for_tls_upgrade

_ACCEPTED_VERSIONS = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class TLSInfo:
    """Negotiated TLS parameters of a connection.

    Attributes:
        version: protocol version as OpenSSL names it, for example ``"TLSv1.3"``.
        cipher: cipher suite name, for example ``"TLS_AES_256_GCM_SHA384"``.
        peer_names: DNS names and IP addresses from the server certificate's
            subjectAltName, in certificate order.
    """

    version: str
    cipher: str
    peer_names: tuple[str, ...] = ()


def tls_info_from_socket(sock: ssl.SSLSocket) -> TLSInfo:
    """Read the negotiated version, cipher and certificate names from a connected socket.

    Raises:
        ValueError: the TLS handshake has not completed.
    """
    version = sock.version()
    cipher = sock.cipher()
    if version is None or cipher is None:
        raise ValueError("the TLS handshake on this socket has not completed")

    return TLSInfo(version=version, cipher=cipher[0], peer_names=_peer_names(sock))


def _peer_names(sock: ssl.SSLSocket) -> tuple[str, ...]:
    certificate = sock.getpeercert() or {}
    entries = certificate.get("subjectAltName", ())
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] in ("DNS", "IP Address"):
            names.append(str(entry[1]))
    return tuple(names)


def is_verified_tls_socket(sock: object) -> bool:
    """Tell whether ``sock`` is a TLS socket that verified its peer.

    True only for an :class:`ssl.SSLSocket` whose context requires a
    certificate and checks the host name, and whose completed handshake
    negotiated TLS 1.2 or 1.3.
    """
    if not isinstance(sock, ssl.SSLSocket):
        return False

    context = sock.context
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        return False

    try:
        version = sock.version()
    except (OSError, ValueError):
        return False

    return version in _ACCEPTED_VERSIONS


def fetch_server_certificate(
    host: str,
    port: int = 3306,
    *,
    timeout: float = 5.0,
    server_hostname: Optional[str] = None,
) -> Optional[bytes]:
    """Fetch the certificate a MySQL server presents, in DER form, without verifying it.

    For error messages only: after a verification failure, the certificate
    names its issuer and the names it is valid for. Opens a separate
    connection, reads the server greeting, sends an SSLRequest packet, runs a
    TLS handshake that accepts any certificate, and closes. It sends no user
    name, password or token, so an untrusted server learns nothing.

    Args:
        host: server address to connect to.
        port: TCP port.
        timeout: seconds allowed for connecting and for each read or write.
        server_hostname: name sent in SNI; defaults to ``host``.

    Returns:
        The DER certificate, or None when the server does not offer TLS.

    Raises:
        OSError: the connection failed or timed out (ssl.SSLError included).
        ValueError: the server's greeting is not MySQL protocol version 10.
    """
    sock = open_for_tls_upgrade(host, port, timeout=timeout)
    if sock is None:
        return None

    # Verification is off on purpose: this connection only reads the certificate.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with sock, probe.wrap_socket(sock, server_hostname=server_hostname or host) as tls_sock:
        return tls_sock.getpeercert(binary_form=True)
