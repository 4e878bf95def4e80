"""TLS policy shared by every driver: verified certificates, host-name check, TLS 1.2+.

An access token is a bearer credential, so it may only travel over a TLS
connection whose server certificate chains to a trusted CA and names the host
the client meant to reach. :class:`TLSConfig` describes where that trust comes
from and builds the :class:`ssl.SSLContext` (for PyMySQL and the pure-Python
mysql-connector) or names the CA bundle file (for drivers that take paths, such
as the mysql-connector C extension).

Host-name checks: Python's ``ssl`` module checks the name passed as
``server_hostname`` against the certificate's subjectAltName entries. When that
name is an IP address, only IP address entries match. When the client connects
through a private IP address (for example a private endpoint), set
``TLSConfig.server_hostname`` to the server's DNS name. The context that
``TLSConfig.create_ssl_context()`` returns then checks the certificate against
that name, while the driver connects to the IP address.

Default CA bundle: certifi's bundle plus the Azure Database for MySQL root CAs
that certifi lacks, taken from ``securemysql/data/azure-root-cas.pem``. It is
merged in memory once per process. :func:`default_ca_bundle` writes it to a
file in a private temporary directory only when a driver needs a path.
"""

from __future__ import annotations

import atexit
import binascii
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Optional

import certifi

from securemysql.errors import (
    CertificateVerificationError,
    ConfigurationError,
    HostnameMismatchError,
    InsecureConfigurationError,
    TLSError,
    TLSNotOfferedError,
    TLSVersionError,
)
from securemysql.redaction import redact

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

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

logger = logging.getLogger("securemysql.tls")

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

#: Root CAs that Azure Database for MySQL server certificates chain to, by
#: subject common name, with the SHA-256 fingerprint of each DER certificate
#: (upper-case hex, colon-separated, as ``openssl x509 -fingerprint`` prints it).
AZURE_ROOT_CAS: Mapping[str, str] = MappingProxyType(
    {
        "DigiCert Global Root CA": (
            "43:48:A0:E9:44:4C:78:CB:26:5E:05:8D:5E:89:44:B4:"
            "D8:4F:96:62:BD:26:DB:25:7F:89:34:A4:43:C7:01:61"
        ),
        "DigiCert Global Root G2": (
            "CB:3C:CB:B7:60:31:E5:E0:13:8F:8D:D3:9A:23:F9:DE:"
            "47:FF:C3:5E:43:C1:14:4C:EA:27:D4:6A:5A:B1:CB:5F"
        ),
        "Microsoft RSA Root Certificate Authority 2017": (
            "C7:41:F7:0F:4B:2A:8D:88:BF:2E:71:C1:41:22:EF:53:"
            "EF:10:EB:A0:CF:A5:E6:4C:FA:20:F4:18:85:30:73:E0"
        ),
    }
)

_AZURE_ROOTS_RESOURCE = "azure-root-cas.pem"

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)

# Bundle files of the common Linux and BSD distributions, tried in this order
# when OpenSSL's compiled-in default file does not exist.
_SYSTEM_BUNDLE_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, FreeBSD, OpenBSD
)

_ACCEPTED_VERSIONS = ("TLSv1.2", "TLSv1.3")


# --- Configuration ---------------------------------------------------------


@dataclass(frozen=True, repr=False)
class TLSConfig:
    """Where the CA certificates that verify the server come from, and which name to check.

    At most one trust source may be set: ``ca_file`` (a PEM bundle),
    ``ca_path`` (an OpenSSL hashed certificate directory), ``ssl_context``
    (a client context the caller built) or ``use_system_trust_store``.
    With none set, the default bundle is used (see :func:`default_ca_bundle`).
    Combining sources is rejected so that every driver trusts exactly the same
    certificates. To trust several, concatenate the PEM files into one.

    ``server_hostname`` replaces the connection host as the name checked
    against the certificate (and sent in SNI): the context that
    :meth:`create_ssl_context` returns is then a
    :class:`HostnameOverrideContext`. An IP address here is checked against
    the certificate's IP address entries. It cannot be combined with
    ``ssl_context``. Drivers that build their own context from
    :meth:`ca_bundle_file` (mysql-connector, both modes) check the connection
    host instead, so callers must not rely on it there.

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
                    "pass the connection host to ssl_context.wrap_socket(). Pass ca_file= "
                    "(or ca_path=) with server_hostname= instead."
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
            ("ca_file", config.ca_file is not None),
            ("ca_path", config.ca_path is not None),
            ("ssl_context", config.ssl_context is not None),
            ("use_system_trust_store", config.use_system_trust_store is True),
        )
        if is_set
    ]
    if len(chosen) > 1:
        raise ConfigurationError(
            f"Set at most one trust source, got {' and '.join(chosen)}. "
            "To trust several CAs, concatenate their PEM files into one ca_file."
        )


def _checked_ca_file(value: object) -> str:
    path = _as_path(value, "ca_file")
    if not os.path.isfile(path):
        raise ConfigurationError(
            f"CA file not found: {path}. Pass ca_file= the path of a PEM file with the "
            "CA certificates that issued the server certificate, or omit ca_file to use "
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
    path = _as_path(value, "ca_path")
    if not os.path.isdir(path):
        raise ConfigurationError(
            f"CA directory not found: {path}. Pass ca_path= a directory of PEM "
            "certificates named by subject hash (see `openssl rehash`), or pass "
            "ca_file= a single PEM bundle instead."
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


# --- CA bundles ------------------------------------------------------------


@dataclass(frozen=True)
class _DefaultBundle:
    pem: str
    certifi_version: str
    added_roots: tuple[str, ...]


_bundle_lock = threading.Lock()
_bundle: Optional[_DefaultBundle] = None

_bundle_file_lock = threading.Lock()
_bundle_file: Optional[str] = None
# (creating process id, directory): a forked child inherits the list but
# removes only the directories it created itself.
_bundle_dirs: list[tuple[int, str]] = []


def default_ca_bundle_pem() -> str:
    """Return the default CA bundle as PEM text: certifi's bundle plus the missing Azure roots.

    Built on first use and cached for the life of the process.
    """
    return _default_bundle().pem


def default_ca_bundle_description() -> str:
    """Describe the default bundle, for example ``default bundle (certifi 2026.10.19 + ...)``."""
    bundle = _default_bundle()
    added = "".join(f" + {name}" for name in bundle.added_roots)
    return f"default bundle (certifi {bundle.certifi_version}{added})"


def default_ca_bundle() -> str:
    """Return the path of a PEM file holding :func:`default_ca_bundle_pem`.

    The file is written once per process into a new private directory
    (mode 0700, from :func:`tempfile.mkdtemp`), by writing a temporary file
    and renaming it, so no reader sees a partial bundle. The directory is
    removed when the process that created it exits. If the file has
    disappeared (for example removed by a temporary-file cleaner, or by a
    parent process that exited after a fork), it is written again.

    Raises:
        OSError: the temporary directory is not writable.
    """
    global _bundle_file

    with _bundle_file_lock:
        if _bundle_file is not None and os.path.isfile(_bundle_file):
            return _bundle_file

        _bundle_file = _write_private_bundle(_default_bundle().pem)
        return _bundle_file


def system_ca_bundle_file() -> Optional[str]:
    """Return the system's CA bundle file, or None if the platform has none.

    Honours ``SSL_CERT_FILE`` through :func:`ssl.get_default_verify_paths`.
    """
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is not None and os.path.isfile(cafile):
        return cafile

    for candidate in _SYSTEM_BUNDLE_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate

    return None


def _default_bundle() -> _DefaultBundle:
    global _bundle

    if _bundle is None:
        with _bundle_lock:
            if _bundle is None:
                _bundle = _build_default_bundle()
    return _bundle


def _build_default_bundle() -> _DefaultBundle:
    with open(certifi.where(), encoding="ascii") as certifi_file:
        certifi_pem = certifi_file.read()

    present = {_fingerprint(block) for block in _PEM_CERTIFICATE.findall(certifi_pem)}

    azure_pem = (
        resources.files("securemysql")
        .joinpath("data")
        .joinpath(_AZURE_ROOTS_RESOURCE)
        .read_text("ascii")
    )
    shipped = {_fingerprint(block): block for block in _PEM_CERTIFICATE.findall(azure_pem)}

    missing_roots = [name for name, fp in AZURE_ROOT_CAS.items() if fp not in shipped]
    if missing_roots:
        raise RuntimeError(f"{_AZURE_ROOTS_RESOURCE} lacks {missing_roots}; the package is damaged")

    added: list[str] = []
    parts = [certifi_pem.rstrip("\n"), ""]
    for name, fingerprint in AZURE_ROOT_CAS.items():
        if fingerprint in present:
            continue
        added.append(name)
        parts.append(f"# {name} (added by securemysql)\n# SHA-256: {fingerprint}")
        parts.append(shipped[fingerprint])

    return _DefaultBundle(
        pem="\n".join(parts) + "\n",
        certifi_version=str(getattr(certifi, "__version__", "unknown")),
        added_roots=tuple(added),
    )


def _write_private_bundle(pem: str) -> str:
    directory = tempfile.mkdtemp(prefix="securemysql-ca-")
    if not _bundle_dirs:
        atexit.register(_remove_bundle_dirs)
    _bundle_dirs.append((os.getpid(), directory))

    handle, partial_path = tempfile.mkstemp(dir=directory, suffix=".partial")
    with os.fdopen(handle, "w", encoding="ascii") as partial:
        partial.write(pem)

    final_path = os.path.join(directory, "ca-bundle.pem")
    os.replace(partial_path, final_path)
    logger.debug("Wrote the default CA bundle to %s", final_path)
    return final_path


def _remove_bundle_dirs() -> None:
    pid = os.getpid()
    for creator, directory in _bundle_dirs:
        if creator == pid:
            shutil.rmtree(directory, ignore_errors=True)


def _fingerprint(pem_block: str) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem_block)
    return _der_fingerprint(der)


def _der_fingerprint(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def iter_pem_fingerprints(pem_text: str) -> Iterator[str]:
    """Yield the SHA-256 fingerprint of each certificate in PEM text, in order."""
    for block in _PEM_CERTIFICATE.findall(pem_text):
        try:
            yield _fingerprint(block)
        except (ValueError, binascii.Error):
            continue


# --- Inspecting an established connection ---------------------------------


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


_CLIENT_PROTOCOL_41 = 1 << 9
_CLIENT_SSL = 1 << 11
_CLIENT_SECURE_CONNECTION = 1 << 15
_UTF8MB4_GENERAL_CI = 45
_MAX_PACKET_SIZE = 16 * 1024 * 1024


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
    with socket.create_connection((host, port), timeout=timeout) as sock:
        greeting = _read_mysql_packet(sock)
        if not _greeting_offers_tls(greeting):
            return None

        ssl_request = struct.pack(
            "<IIB23s",
            _CLIENT_SSL | _CLIENT_PROTOCOL_41 | _CLIENT_SECURE_CONNECTION,
            _MAX_PACKET_SIZE,
            _UTF8MB4_GENERAL_CI,
            b"",
        )
        sock.sendall(len(ssl_request).to_bytes(3, "little") + b"\x01" + ssl_request)

        # Verification is off on purpose: this connection only reads the certificate.
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        with probe.wrap_socket(sock, server_hostname=server_hostname or host) as tls_sock:
            return tls_sock.getpeercert(binary_form=True)


def _read_mysql_packet(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 4)
    return _recv_exact(sock, int.from_bytes(header[:3], "little"))


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection during the greeting")
        data += chunk
    return bytes(data)


def _greeting_offers_tls(greeting: bytes) -> bool:
    if not greeting or greeting[0] != 10:
        raise ValueError("the server's greeting is not MySQL protocol version 10")

    # version string, NUL, 4-byte connection id, 8 scramble bytes, 1 filler byte
    capabilities_at = greeting.index(b"\0", 1) + 1 + 4 + 8 + 1
    (capabilities,) = struct.unpack_from("<H", greeting, capabilities_at)
    return bool(capabilities & _CLIENT_SSL)


# --- Translating driver failures --------------------------------------------

_HOSTNAME_MISMATCH_CODES = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH

_HOSTNAME_MISMATCH_TEXT = re.compile(
    r"hostname mismatch|ip address mismatch|doesn't match|does not match|"
    r"certificate is not valid for",
    re.IGNORECASE,
)
_CERT_VERIFY_TEXT = re.compile(
    r"certificate_verify_failed|certificate verify failed|unable to get local issuer|"
    r"self[- ]signed certificate|certificate has expired|certificate is not yet valid|"
    r"unable to verify the first certificate|certificate signature failure",
    re.IGNORECASE,
)
_VERIFY_REASON = re.compile(r"certificate verify failed:\s*([^(]+?)\s*(?:\(_ssl|$)", re.IGNORECASE)
_NOT_OFFERED_TEXT = re.compile(r"ssl is required but the server doesn't support it", re.IGNORECASE)
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

    if verify_error is not None or _CERT_VERIFY_TEXT.search(detail):
        # The C extension reports a wrong host name as a plain verification failure.
        if _certificate_lacks_name(peer_certificate, hostname):
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
