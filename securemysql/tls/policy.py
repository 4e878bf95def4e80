"""TLS policy: where trust comes from, and a client context that enforces it.

Host-name checks: Python's ``ssl`` module checks the name passed as
``server_hostname`` against the certificate's subjectAltName entries. When that
name is an IP address, only IP address entries match. When the client connects
through a private IP address (for example a private endpoint), set
``TLSConfig.server_hostname`` to the server's DNS name. The context that
``TLSConfig.create_ssl_context()`` returns then checks the certificate against
that name, while the driver connects to the IP address.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Optional

from securemysql.errors import ConfigurationError, InsecureConfigurationError
from securemysql.tls.bundle import (
    default_ca_bundle,
    default_ca_bundle_description,
    default_ca_bundle_pem,
    system_ca_bundle_file,
)

logger = logging.getLogger("securemysql.tls")

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

# --- Configuration ---------------------------------------------------------


@dataclass(frozen=True, repr=False)
class TLSConfig:
    """TLS trust settings: the source of the CA certificates, and the host name to check.

    At most one trust source may be set: ``ca_file`` (a PEM bundle),
    ``ca_path`` (an OpenSSL hashed certificate directory), ``ssl_context``
    (a client context the caller built) or ``use_system_trust_store``.
    ConnectionFactory takes the first two as ``ssl_ca`` and ``ssl_capath``, and
    messages use those names.
    With none set, the default bundle is used (see :func:`default_ca_bundle`).
    Combining sources is rejected so that every driver trusts exactly the same
    certificates. To trust several, concatenate the PEM files into one.

    ``server_hostname`` replaces the connection host as the name checked
    against the certificate (and sent in SNI): the context that
    :meth:`create_ssl_context` returns is then a
    :class:`HostnameOverrideContext`. An IP address here is checked against
    the certificate's IP address entries. It cannot be combined with
    ``ssl_context``. PyMySQL and mysql-connector's pure-Python mode use that
    context, so the override applies there. The mysql-connector C extension
    takes only :meth:`ca_bundle_file` and checks the connection host, so the
    driver raises ConfigurationError for ``server_hostname`` with
    ``use_pure=False`` and otherwise uses the pure-Python mode.

    Raises:
        ConfigurationError: a file or directory is missing or contains no
            certificate, several trust sources are set, or a value has the
            wrong type.
        InsecureConfigurationError: ``ssl_context`` would not verify the
            certificate or host name, or would allow TLS older than 1.2.
    """

    ca_file: Optional[str] = None
    ca_path: Optional[str] = None
    ssl_context: Optional[ssl.SSLContext] = None
    use_system_trust_store: bool = False
    server_hostname: Optional[str] = None

    def __post_init__(self) -> None:
        _check_single_trust_source(self)

        if self.ca_file is not None:
            object.__setattr__(self, "ca_file", _checked_ca_file(self.ca_file))

        if self.ca_path is not None:
            object.__setattr__(self, "ca_path", _checked_ca_path(self.ca_path))

        if self.ssl_context is not None:
            _check_user_context(self.ssl_context)

        if not isinstance(self.use_system_trust_store, bool):
            raise ConfigurationError(
                "use_system_trust_store must be True or False, "
                f"not {type(self.use_system_trust_store).__name__}"
            )

        if self.server_hostname is not None:
            _check_server_hostname(self.server_hostname)
            if self.ssl_context is not None:
                raise ConfigurationError(
                    "server_hostname cannot be combined with ssl_context, because the drivers "
                    "pass the connection host to ssl_context.wrap_socket(). Pass ssl_ca= "
                    "(or ssl_capath=) with server_hostname= instead."
                )

    def __repr__(self) -> str:
        hostname = (
            "" if self.server_hostname is None else f", server_hostname={self.server_hostname!r}"
        )
        return f"TLSConfig(trust={self.ca_source!r}{hostname})"

    @property
    def ca_source(self) -> str:
        """Human-readable description of the trusted CAs, for error messages and logs."""
        if self.ca_file is not None:
            return f"CA file {self.ca_file}"

        if self.ca_path is not None:
            return f"CA directory {self.ca_path}"

        if self.ssl_context is not None:
            return "the ssl_context passed by the caller"

        if self.use_system_trust_store:
            bundle = system_ca_bundle_file()
            return "system trust store" + ("" if bundle is None else f" ({bundle})")

        return default_ca_bundle_description()

    def create_ssl_context(self) -> ssl.SSLContext:
        """Build a client context that requires a verified certificate, the host name and TLS 1.2+.

        A caller-supplied ``ssl_context`` is returned as it is, after checking
        again that it still verifies (the object is mutable).

        Raises:
            InsecureConfigurationError: the caller-supplied context was
                weakened after this configuration was created.
        """
        if self.ssl_context is not None:
            _check_user_context(self.ssl_context)
            return self.ssl_context

        context = _new_client_context(self.server_hostname)
        _require_verified_peer(context)
        _require_minimum_version(context)
        _disable_compression(context)
        self._load_trust_source(context)
        return context

    def ca_bundle_file(self) -> Optional[str]:
        """Return a PEM file with the trusted CAs, for drivers that take a path.

        Returns ``ca_file``, the default bundle file, or the system bundle
        file. Returns None when trust comes from ``ca_path`` or ``ssl_context``
        (no single file represents it), or when the system trust store has no
        bundle file (Windows, some macOS Pythons): the caller then has to pick
        another way or reject the driver.
        """
        if self.ca_file is not None:
            return self.ca_file

        if self.ca_path is not None or self.ssl_context is not None:
            return None

        if self.use_system_trust_store:
            return system_ca_bundle_file()

        return default_ca_bundle()

    def _load_trust_source(self, context: ssl.SSLContext) -> None:
        if self.ca_file is not None or self.ca_path is not None:
            context.load_verify_locations(cafile=self.ca_file, capath=self.ca_path)
        elif self.use_system_trust_store:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.load_verify_locations(cadata=default_ca_bundle_pem())


def _check_single_trust_source(config: TLSConfig) -> None:
    chosen = [
        name
        for name, is_set in (
            ("ssl_ca", config.ca_file is not None),
            ("ssl_capath", config.ca_path is not None),
            ("ssl_context", config.ssl_context is not None),
            ("use_system_trust_store", config.use_system_trust_store is True),
        )
        if is_set
    ]
    if len(chosen) > 1:
        raise ConfigurationError(
            f"Set at most one trust source, got {' and '.join(chosen)}. "
            "To trust several CAs, concatenate their PEM files into one file and pass "
            "it as ssl_ca."
        )


def _checked_ca_file(value: object) -> str:
    path = _as_path(value, "ssl_ca")
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"CA file not found: {path}. Pass ssl_ca= (--ssl-ca on the command line) the "
            "path of a PEM file with the CA certificates that issued the server "
            "certificate, or omit it to use "
            "the default bundle (certifi plus the Azure Database for MySQL root CAs)."
        )

    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"CA file {path} could not be loaded ({exc}). It must contain PEM "
            "certificates (-----BEGIN CERTIFICATE----- blocks)."
        ) from None

    return path


def _checked_ca_path(value: object) -> str:
    path = _as_path(value, "ssl_capath")
    if not os.path.isdir(path):
        raise ConfigurationError(
            f"CA directory not found: {path}. Pass ssl_capath= a directory of PEM "
            "certificates named by subject hash (see `openssl rehash`), or pass "
            "ssl_ca= a single PEM bundle instead."
        )
    return path


def _as_path(value: object, name: str) -> str:
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    raise ConfigurationError(f"{name} must be a non-empty path string, not {value!r}")


def _check_user_context(context: object) -> None:
    if not isinstance(context, ssl.SSLContext):
        raise ConfigurationError(
            f"ssl_context must be an ssl.SSLContext, not {type(context).__name__}"
        )

    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ConfigurationError(
            "ssl_context was created with ssl.PROTOCOL_TLS_SERVER; create a client "
            "context with ssl.create_default_context() or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)."
        )

    if context.verify_mode != ssl.CERT_REQUIRED:
        raise InsecureConfigurationError(
            f"ssl_context.verify_mode is {context.verify_mode.name}, so the server "
            "certificate would not be verified and any host on the network path could "
            "receive the access token. Set verify_mode = ssl.CERT_REQUIRED."
        )

    if not context.check_hostname:
        raise InsecureConfigurationError(
            "ssl_context.check_hostname is False, so any certificate from a trusted CA, "
            "issued for any host, would be accepted. Set check_hostname = True; to check "
            "a name other than the connection host, pass server_hostname= instead."
        )

    if not _is_at_least_tls12(context.minimum_version):
        raise InsecureConfigurationError(
            f"ssl_context.minimum_version is {context.minimum_version.name}, which allows "
            "TLS versions older than 1.2. Set minimum_version = ssl.TLSVersion.TLSv1_2."
        )

    if getattr(context, "keylog_filename", None):
        # A key log lets anyone who can read that file decrypt the access token.
        logger.warning(
            "ssl_context writes TLS session keys to %s (SSLKEYLOGFILE); anyone who can "
            "read that file can decrypt the access token from a packet capture",
            context.keylog_filename,
        )


def _is_at_least_tls12(version: ssl.TLSVersion) -> bool:
    # MINIMUM_SUPPORTED (-2) means whatever the OpenSSL build allows, possibly TLS 1.0.
    return version.value >= MINIMUM_TLS_VERSION.value or version == ssl.TLSVersion.MAXIMUM_SUPPORTED


def _check_server_hostname(value: object) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() or ch == "\0" for ch in value):
        raise ConfigurationError(
            f"server_hostname must be a DNS name or IP address without spaces, not {value!r}"
        )


class HostnameOverrideContext(ssl.SSLContext):
    """Client context that checks the certificate against a fixed name.

    Drivers call ``wrap_socket(sock, server_hostname=<connection host>)``;
    this context replaces that name with ``server_hostname`` for both SNI and
    the host-name check. Use it when connecting through an address that the
    certificate does not list, such as a private IP address.
    """

    server_hostname: str

    def __new__(
        cls, protocol: int = ssl.PROTOCOL_TLS_CLIENT, *, server_hostname: str
    ) -> HostnameOverrideContext:
        context = super().__new__(cls, protocol)
        context.server_hostname = server_hostname
        return context

    def wrap_socket(  # type: ignore[override]
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: Optional[str] = None,
        session: Optional[ssl.SSLSession] = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.server_hostname,
            session=session,
        )

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: Optional[str] = None,
        session: Optional[ssl.SSLSession] = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=self.server_hostname,
            session=session,
        )


# --- Context construction steps -------------------------------------------


def _new_client_context(server_hostname: Optional[str]) -> ssl.SSLContext:
    # SSLContext directly, not ssl.create_default_context(): the latter writes
    # session keys to the file named by SSLKEYLOGFILE, which would let a packet
    # capture reveal the access token.
    if server_hostname is None:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return HostnameOverrideContext(ssl.PROTOCOL_TLS_CLIENT, server_hostname=server_hostname)


def _require_verified_peer(context: ssl.SSLContext) -> None:
    # check_hostname must be set before verify_mode can no longer be lowered,
    # and a certificate that chains to a trusted CA but names another host is
    # as dangerous as an untrusted one.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True


def _require_minimum_version(context: ssl.SSLContext) -> None:
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); Azure Database for MySQL accepts 1.2 and 1.3.
    context.minimum_version = MINIMUM_TLS_VERSION


def _disable_compression(context: ssl.SSLContext) -> None:
    # Compression before encryption leaks secrets by ciphertext length (CRIME).
    context.options |= ssl.OP_NO_COMPRESSION
