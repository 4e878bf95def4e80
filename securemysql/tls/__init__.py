"""TLS policy shared by every driver: verified certificates, host-name check, TLS 1.2+.

An access token is a bearer credential, so it may only travel over a TLS
connection whose server certificate chains to a trusted CA and names the host
the client meant to reach. :class:`TLSConfig` describes where that trust comes
from and builds the :class:`ssl.SSLContext` (for PyMySQL and the pure-Python
mysql-connector) or names the CA bundle file (for drivers that take paths, such
as the mysql-connector C extension).

The public API is what this package exports; the submodules are its
implementation. :mod:`.policy` contains :class:`TLSConfig` and the checks on
caller-supplied contexts, :mod:`.bundle` the default and system CA bundles,
:mod:`.session` the inspection of connected sockets and the fetching of a
server's certificate, :mod:`.handshake` the client side of MySQL's exchange
before TLS (greeting and SSLRequest), and :mod:`.failures` the translation of
driver errors into :class:`securemysql.errors.TLSError` subclasses. All log records go to the
``securemysql.tls`` logger.
"""

from __future__ import annotations

from securemysql.tls.bundle import (
    AZURE_ROOT_CAS,
    default_ca_bundle,
    default_ca_bundle_description,
    default_ca_bundle_pem,
    iter_pem_fingerprints,
    system_ca_bundle_file,
)
from securemysql.tls.failures import translate_tls_failure
from securemysql.tls.policy import MINIMUM_TLS_VERSION, HostnameOverrideContext, TLSConfig
from securemysql.tls.session import (
    TLSInfo,
    fetch_server_certificate,
    is_verified_tls_socket,
    tls_info_from_socket,
)

__all__ = [
    "AZURE_ROOT_CAS",
    "MINIMUM_TLS_VERSION",
    "HostnameOverrideContext",
    "TLSConfig",
    "TLSInfo",
    "default_ca_bundle",
    "default_ca_bundle_description",
    "default_ca_bundle_pem",
    "fetch_server_certificate",
    "is_verified_tls_socket",
    "iter_pem_fingerprints",
    "system_ca_bundle_file",
    "tls_info_from_socket",
    "translate_tls_failure",
]
