"""Translating driver and ``ssl`` failures into securemysql's TLS errors."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from securemysql.errors import (
    CertificateVerificationError,
    HostnameMismatchError,
    TLSError,
    TLSNotOfferedError,
    TLSVersionError,
)
from securemysql.redaction import redact

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

_HOSTNAME_MISMATCH_CODES = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH

_HOSTNAME_MISMATCH_TEXT = re.compile(
    r"hostname mismatch|ip address mismatch|doesn't match|does not match|"
    r"certificate is not valid for",
    re.IGNORECASE,
)
# OpenSSL's generic text, which the C extension reports for both an untrusted chain
# and a wrong host name.
_CERT_VERIFY_TEXT = re.compile(
    r"certificate_verify_failed|certificate verify failed", re.IGNORECASE
)
# OpenSSL's reasons for rejecting the certificate chain itself.
_CHAIN_FAILURE_TEXT = re.compile(
    r"unable to get local issuer|self[- ]signed certificate|certificate has expired|"
    r"certificate is not yet valid|unable to verify the first certificate|"
    r"certificate signature failure",
    re.IGNORECASE,
)
_VERIFY_REASON = re.compile(r"certificate verify failed:\s*([^(]+?)\s*(?:\(_ssl|$)", re.IGNORECASE)
# mysql-connector 26.10 checks mysql_clear_password before "SSL is required", so a
# server without TLS gets "... is not supported over insecure channels". The same
# text follows ssl_disabled or unix_socket, which securemysql never passes.
_NOT_OFFERED_TEXT = re.compile(
    r"ssl is required but the server doesn't support it|not supported over insecure channels",
    re.IGNORECASE,
)
_VERSION_TEXT = re.compile(
    r"unsupported protocol|wrong version number|tlsv1_alert_protocol_version|"
    r"tlsv1 alert protocol version|no protocols available|unsupported_protocol",
    re.IGNORECASE,
)
_CR_SSL_CONNECTION_ERROR = 2026


def translate_tls_failure(
    exc: BaseException,
    *,
    hostname: str,
    ca_source: str,
    peer_certificate: Optional[bytes] = None,
) -> Optional[TLSError]:
    """Map a driver or ``ssl`` exception to the matching :class:`TLSError`, or None.

    Looks at ``exc`` and its chained causes: :class:`ssl.SSLCertVerificationError`
    objects, the text of driver errors (PyMySQL, mysql-connector pure Python and
    C extension), and MySQL client error 2026 (SSL connection error).

    Args:
        exc: the exception raised while connecting.
        hostname: the name (or IP address) the certificate was checked against.
        ca_source: description of the trusted CAs, normally ``TLSConfig.ca_source``.
        peer_certificate: the server certificate in DER form, if the caller
            fetched it; used to name its issuer and its subjectAltName entries.
            When the error does not say whether the chain or the host name
            failed, a certificate that lacks ``hostname`` makes the result a
            HostnameMismatchError. An error that reports a failed chain (by
            verification code or OpenSSL's reason) stays a
            CertificateVerificationError.

    Returns:
        A new, unraised error whose message contains no driver text that
        :func:`securemysql.redaction.redact` would hide; None when ``exc``
        is not a TLS failure. The caller chains ``exc`` as its cause.
    """
    chain = list(_exception_chain(exc))
    detail = _failure_detail(chain)
    verify_error = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)

    if _is_hostname_mismatch(verify_error, detail):
        return _hostname_mismatch_error(hostname, detail, peer_certificate)

    chain_failed = _is_chain_failure(verify_error, detail)
    if chain_failed or _CERT_VERIFY_TEXT.search(detail):
        # The C extension reports a wrong host name as a plain verification failure.
        # A chain known to fail wins over a missing name: trusting the CA comes first.
        if not chain_failed and _certificate_lacks_name(peer_certificate, hostname):
            return _hostname_mismatch_error(hostname, detail, peer_certificate)
        return _certificate_error(hostname, ca_source, detail, verify_error, peer_certificate)

    if _NOT_OFFERED_TEXT.search(detail):
        return TLSNotOfferedError(
            f"The server at {hostname!r} does not offer TLS, so the access token was not "
            "sent. Enable TLS on the server. securemysql never falls back to an unencrypted "
            "connection. Azure Database for MySQL servers offer TLS, so check that "
            f"{hostname!r} is the server you meant."
        )

    if _VERSION_TEXT.search(detail):
        return TLSVersionError(
            f"The TLS handshake with {hostname!r} failed because the server does not speak "
            f"TLS 1.2 or newer ({detail}). Enable TLS 1.2 or 1.3 on the server; "
            "securemysql does not accept older versions."
        )

    is_ssl_error = any(isinstance(e, ssl.SSLError) for e in chain)
    if is_ssl_error or _CR_SSL_CONNECTION_ERROR in (_mysql_errno(e) for e in chain):
        return TLSError(
            f"The TLS connection to {hostname!r} failed ({detail}); the access token was "
            f"not sent. Trusted CAs: {ca_source}. Check that the server's certificate "
            "chains to one of them and names this host."
        )

    return None


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _failure_detail(chain: list[BaseException]) -> str:
    texts: list[str] = []
    for error in chain:
        text = _error_text(error)
        if text and not any(text in earlier for earlier in texts):
            texts.append(text)
    return redact("; ".join(texts)) or "no detail from the driver"


def _error_text(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.args:
        return str(error.args[-1]) if len(error.args) > 1 else str(error.args[0])

    driver_message = getattr(error, "msg", None)
    if isinstance(driver_message, str) and driver_message:
        return driver_message

    if len(error.args) == 2 and isinstance(error.args[0], int):
        return str(error.args[1])  # PyMySQL: (errno, message)

    return str(error)


def _mysql_errno(error: BaseException) -> Optional[int]:
    errno = getattr(error, "errno", None)
    if isinstance(errno, int):
        return errno
    if error.args and isinstance(error.args[0], int):
        return error.args[0]
    return None


def _is_hostname_mismatch(
    verify_error: Optional[ssl.SSLCertVerificationError], detail: str
) -> bool:
    if verify_error is not None and verify_error.verify_code in _HOSTNAME_MISMATCH_CODES:
        return True
    return bool(_HOSTNAME_MISMATCH_TEXT.search(detail))


def _is_chain_failure(verify_error: Optional[ssl.SSLCertVerificationError], detail: str) -> bool:
    # Called after _is_hostname_mismatch(), so a verification error left here
    # has a chain or validity code (such as 20, unable to get local issuer).
    return verify_error is not None or bool(_CHAIN_FAILURE_TEXT.search(detail))


def _hostname_mismatch_error(
    hostname: str, detail: str, peer_certificate: Optional[bytes]
) -> HostnameMismatchError:
    names = _certificate_names(peer_certificate)
    listed = f" The certificate is valid for: {', '.join(names)}." if names else ""
    return HostnameMismatchError(
        f"The server certificate is not valid for {hostname!r} ({detail}), so the access "
        f"token was not sent.{listed} Connect using a name the certificate lists. When "
        "connecting through a private IP address, pass server_hostname= the server's DNS "
        "name so that the certificate is checked against that name.",
        hostname=hostname,
        certificate_names=names,
    )


def _certificate_error(
    hostname: str,
    ca_source: str,
    detail: str,
    verify_error: Optional[ssl.SSLCertVerificationError],
    peer_certificate: Optional[bytes],
) -> CertificateVerificationError:
    issuer = _certificate_issuer(peer_certificate)
    reason = _verification_reason(verify_error, detail)
    presented = f" The server presented a certificate issued by {issuer}." if issuer else ""
    return CertificateVerificationError(
        f"The certificate of {hostname!r} failed verification ({reason}) against "
        f"{ca_source}, so the access token was not sent.{presented} If the server uses a "
        "private CA, pass ssl_ca= the path of that CA's PEM file; otherwise check which CA "
        "issued the server's certificate.",
        issuer=issuer,
        ca_source=ca_source,
    )


def _verification_reason(verify_error: Optional[ssl.SSLCertVerificationError], detail: str) -> str:
    if verify_error is not None and verify_error.verify_message:
        return str(verify_error.verify_message)
    match = _VERIFY_REASON.search(detail)
    return match.group(1) if match else detail


def _certificate_names(der: Optional[bytes]) -> tuple[str, ...]:
    certificate = _load_certificate(der)
    if certificate is None:
        return ()

    from cryptography import x509

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns_names = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    addresses = [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns_names + addresses)


def _certificate_lacks_name(der: Optional[bytes], hostname: str) -> bool:
    """Tell whether the certificate's names are known and none of them matches ``hostname``."""
    names = _certificate_names(der)
    if not names:
        return False
    return not any(_name_matches(name, hostname) for name in names)


def _name_matches(pattern: str, hostname: str) -> bool:
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(hostname)
    except ValueError:
        pass

    pattern = pattern.lower().rstrip(".")
    hostname = hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        # A wildcard covers exactly one left-most label (RFC 6125, section 6.4.3).
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def _certificate_issuer(der: Optional[bytes]) -> Optional[str]:
    certificate = _load_certificate(der)
    return None if certificate is None else certificate.issuer.rfc4514_string()


def _load_certificate(der: Optional[bytes]) -> Optional[Certificate]:
    if not der:
        return None
    try:
        from cryptography import x509
    except ImportError:  # cryptography comes with azure-identity, but stay usable without it
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None
