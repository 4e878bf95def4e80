"""Turn a driver's TLS failure into the specific TLSError, with the server certificate's details.

Drivers report a failed TLS setup in their own words: PyMySQL as 2003 and
mysql-connector's pure-Python mode as 2055, both with the ``ssl`` module's
verification error chained, and the C extension as 2026 with OpenSSL's
generic "certificate verify failed" for an untrusted chain and a wrong host
name alike. :func:`diagnose_tls_failure` tells these apart and names the
certificate's issuer or host names. When the chain carries no verification
error (the C extension), it repeats the TLS handshake with Python's ``ssl``
module and the same CAs, over a separate connection that sends no user name,
password or token.
"""

from __future__ import annotations

import logging
import ssl
from typing import Optional

from securemysql.drivers.base import ConnectParams
from securemysql.errors import CertificateVerificationError, HostnameMismatchError, TLSError
from securemysql.tls import fetch_server_certificate, translate_tls_failure
from securemysql.tls.handshake import open_for_tls_upgrade

logger = logging.getLogger("securemysql.drivers")

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES = frozenset({62, 64})

_PROBE_NOTE = (
    " (The driver reports an untrusted certificate and a wrong host name alike; securemysql "
    "found the cause with a second TLS handshake that sent no credentials.)"
)


def diagnose_tls_failure(params: ConnectParams, exc: BaseException) -> Optional[TLSError]:
    """Return the TLSError that explains ``exc``, or None when it is not a TLS failure.

    Certificate failures become CertificateVerificationError (with the issuer
    the server presented and the trusted CA source) or HostnameMismatchError
    (with the name checked and the names in the certificate). Other TLS
    failures are translated by :func:`securemysql.tls.translate_tls_failure`.
    The caller raises the result ``from exc``.
    """
    hostname = params.tls.server_hostname or params.host
    ca_source = params.tls.ca_source
    translated = translate_tls_failure(exc, hostname=hostname, ca_source=ca_source)
    if translated is None or not _may_be_certificate_failure(translated):
        return translated

    verify_error = _verification_error_in_chain(exc)
    probed = verify_error is None
    certificate = _fetch_certificate(params)
    if verify_error is None:
        verify_error = _probe_verification(params)
    if verify_error is None:
        return translated

    diagnosed = _certificate_failure(verify_error, hostname, ca_source, certificate)
    if diagnosed is None:
        return translated
    if probed:
        diagnosed.args = (f"{diagnosed.args[0]}{_PROBE_NOTE}",)
    return diagnosed


def _may_be_certificate_failure(error: TLSError) -> bool:
    # A bare TLSError is a 2026 or ssl.SSLError whose text named no cause.
    kinds = (CertificateVerificationError, HostnameMismatchError)
    return isinstance(error, kinds) or type(error) is TLSError


def _verification_error_in_chain(exc: BaseException) -> Optional[ssl.SSLCertVerificationError]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _certificate_failure(
    verify_error: ssl.SSLCertVerificationError,
    hostname: str,
    ca_source: str,
    certificate: Optional[bytes],
) -> Optional[TLSError]:
    if verify_error.verify_code in _NAME_MISMATCH_CODES:
        return translate_tls_failure(
            verify_error, hostname=hostname, ca_source=ca_source, peer_certificate=certificate
        )

    # The verify code already shows that the chain failed, so only the issuer is added here.
    error = translate_tls_failure(verify_error, hostname=hostname, ca_source=ca_source)
    issuer = _certificate_issuer(certificate)
    if not isinstance(error, CertificateVerificationError) or issuer is None:
        return error
    return CertificateVerificationError(
        f"{error} The server presented a certificate issued by {issuer}.",
        issuer=issuer,
        ca_source=ca_source,
    )


def _certificate_issuer(der: Optional[bytes]) -> Optional[str]:
    if not der:
        return None
    try:
        from cryptography import x509
    except ImportError:  # cryptography comes with azure-identity; stay usable without it
        return None
    try:
        return x509.load_der_x509_certificate(der).issuer.rfc4514_string()
    except ValueError:
        return None


def _fetch_certificate(params: ConnectParams) -> Optional[bytes]:
    try:
        return fetch_server_certificate(
            params.host,
            params.port,
            timeout=params.connect_timeout,
            server_hostname=params.tls.server_hostname,
        )
    except (OSError, ValueError) as exc:
        logger.debug("could not fetch the certificate of %s:%d: %s", params.host, params.port, exc)
        return None


def _probe_verification(params: ConnectParams) -> Optional[ssl.SSLCertVerificationError]:
    try:
        return verify_server_certificate(
            params.host, params.port, params.ssl_context, timeout=params.connect_timeout
        )
    except (OSError, ValueError) as exc:
        logger.warning(
            "could not repeat the TLS handshake with %s:%d to find why it failed: %s",
            params.host,
            params.port,
            exc,
        )
        return None


def verify_server_certificate(
    host: str, port: int, context: ssl.SSLContext, *, timeout: float
) -> Optional[ssl.SSLCertVerificationError]:
    """Run a MySQL TLS handshake with ``context`` and return its verification error, if any.

    Reads the server greeting, sends an SSLRequest and runs the handshake; it
    sends no user name, password or token, and closes right after.

    Returns:
        None when the handshake succeeds or the server offers no TLS.

    Raises:
        OSError: the connection failed or timed out (other ssl.SSLError included).
        ValueError: the greeting is not MySQL protocol version 10.
    """
    sock = open_for_tls_upgrade(host, port, timeout=timeout)
    if sock is None:
        return None

    with sock:
        try:
            with context.wrap_socket(sock, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as exc:
            return exc
