"""Server certificate details for the TLS stage: names, issuer chain, expiry and offline checks.

The offline checks are for the report only. OpenSSL decides whether TLS is
trusted, during the verified handshake, and stops at the first error it finds.
These functions explain such a failure: which names the certificate lists,
and whether the chain would verify.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

# Longer chains than this are not built; real server chains have two to four certificates.
_MAX_CHAIN_LENGTH = 10


def load_der(der: bytes) -> x509.Certificate:
    """Parse one DER certificate.

    Raises:
        ValueError: ``der`` is not a certificate.
    """
    return x509.load_der_x509_certificate(der)


def load_pem_bundle(pem: bytes) -> list[x509.Certificate]:
    """Parse every certificate of a PEM bundle; an empty list when there are none."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """Return the DNS names and IP addresses of the subjectAltName extension, in order."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []

    names: list[str] = []
    for entry in extension.value:
        if isinstance(entry, (x509.DNSName, x509.IPAddress)):
            names.append(str(entry.value))
    return names


def not_valid_after(certificate: x509.Certificate) -> datetime:
    """Return the end of the validity period as an aware UTC datetime."""
    value = getattr(certificate, "not_valid_after_utc", None)  # cryptography 42 and newer
    if isinstance(value, datetime):
        return value
    return certificate.not_valid_after.replace(tzinfo=timezone.utc)


def not_valid_before(certificate: x509.Certificate) -> datetime:
    """Return the start of the validity period as an aware UTC datetime."""
    value = getattr(certificate, "not_valid_before_utc", None)  # cryptography 42 and newer
    if isinstance(value, datetime):
        return value
    return certificate.not_valid_before.replace(tzinfo=timezone.utc)


def describe_certificate(certificate: x509.Certificate, now: datetime) -> dict[str, Any]:
    """Return the JSON description of the server certificate.

    Keys: ``subject`` and ``issuer`` (RFC 4514 strings), ``names`` (the
    subjectAltName entries), ``not_before`` and ``not_after`` (ISO 8601, UTC),
    ``days_until_expiry`` (whole days, negative once expired) and ``sha256``
    (fingerprint of the DER form, colon-separated upper-case hex).
    """
    expires = not_valid_after(certificate)
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "names": certificate_names(certificate),
        "not_before": not_valid_before(certificate).isoformat(),
        "not_after": expires.isoformat(),
        "days_until_expiry": int((expires - now).total_seconds() // 86400),
        "sha256": fingerprint(certificate),
    }


def describe_chain(chain: Sequence[x509.Certificate]) -> list[dict[str, str]]:
    """Return subject, issuer and end of validity of each certificate, leaf first."""
    return [
        {
            "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "not_after": not_valid_after(certificate).isoformat(),
        }
        for certificate in chain
    ]


def fingerprint(certificate: x509.Certificate) -> str:
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return ":".join(f"{byte:02X}" for byte in digest)


def hostname_matches(hostname: str, names: Sequence[str]) -> bool:
    """Tell whether ``hostname`` matches one of the certificate's subjectAltName entries.

    Follows the rules that Python's ``ssl`` module applies through OpenSSL. An
    IP address matches IP address entries only. A DNS name matches a DNS entry
    exactly (ignoring case and a trailing dot), or a wildcard ``*`` that covers
    the whole left-most label. The subject's common name is not used.
    """
    try:
        host_ip = ipaddress.ip_address(hostname)
    except ValueError:
        host_ip = None

    for name in names:
        try:
            name_ip = ipaddress.ip_address(name)
        except ValueError:
            name_ip = None

        if host_ip is not None or name_ip is not None:
            if host_ip is not None and host_ip == name_ip:
                return True
            continue
        if _dns_name_matches(name, hostname):
            return True
    return False


def _dns_name_matches(pattern: str, hostname: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    hostname = hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        first_label, _, rest = hostname.partition(".")
        return bool(first_label) and rest == pattern[2:]
    return pattern == hostname


def build_chain(
    presented: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[list[x509.Certificate], Optional[str]]:
    """Build the chain from the leaf to a trusted CA and check each link.

    Each certificate must be within its validity period and signed by the next
    one, found by subject among the presented certificates and ``anchors``.

    Returns:
        The chain built so far, leaf first, and None when it ends at a
        certificate of ``anchors``, else the reason it does not verify.
    """
    trusted = {certificate.public_bytes(Encoding.DER) for certificate in anchors}
    pool = [*presented[1:], *anchors]
    chain = [presented[0]]

    while len(chain) <= _MAX_CHAIN_LENGTH:
        current = chain[-1]
        subject = current.subject.rfc4514_string()
        if not not_valid_before(current) <= now <= not_valid_after(current):
            expiry = not_valid_after(current).isoformat()
            return chain, f"certificate {subject!r} is outside its validity period (ends {expiry})"

        if current.public_bytes(Encoding.DER) in trusted:
            return chain, None

        issuer = _find_issuer(current, pool)
        if issuer is None:
            return chain, (
                f"no trusted CA issued {subject!r}: its issuer "
                f"{current.issuer.rfc4514_string()!r} is not among the trusted CAs"
            )
        if issuer in chain:
            return chain, f"the chain loops at {issuer.subject.rfc4514_string()!r}"
        chain.append(issuer)

    return chain, f"the chain is longer than {_MAX_CHAIN_LENGTH} certificates"


def _find_issuer(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> Optional[x509.Certificate]:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None
