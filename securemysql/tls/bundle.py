"""CA bundles: the default bundle (certifi plus the Azure roots) and the system bundle file.

Default CA bundle: certifi's bundle plus the Azure Database for MySQL root CAs
that certifi lacks, taken from ``securemysql/data/azure-root-cas.pem``. It is
merged in memory once per process. :func:`default_ca_bundle` writes it to a
file in a private temporary directory only when a driver needs a path.
"""

from __future__ import annotations

import atexit
import binascii
import hashlib
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Optional

import certifi

logger = logging.getLogger("securemysql.tls")

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
