"""Test certificates for the sandbox's TLS variants, generated with ``trustme``."""

from __future__ import annotations

import enum
import os
from pathlib import Path

import trustme

from securemysql.sandbox.server import ServerTLSFiles

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
WRONG_HOST_NAME = "wrong-host.invalid"


class TLSMode(enum.Enum):
    """What the sandbox server offers on TLS."""

    VERIFIED = "verified"  # certificate for localhost/127.0.0.1 from the sandbox CA
    NONE = "none"  # no TLS at all
    WRONG_HOST = "wrong_host"  # sandbox CA, but issued for another host name
    UNTRUSTED = "untrusted"  # right names, but from a CA the client does not trust


class SandboxCertificates:
    """A trusted sandbox CA (what clients get as ``ssl_ca``) and an untrusted one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        self._trusted = trustme.CA(organization_name="securemysql sandbox CA")
        self._untrusted = trustme.CA(organization_name="securemysql untrusted CA")
        self.ca_file = self.directory / "ca.pem"
        self._trusted.cert_pem.write_to_path(str(self.ca_file))

    def server_files(self, mode: TLSMode) -> ServerTLSFiles | None:
        """Write and return the server's PEM files for ``mode`` (None for no TLS)."""
        if mode is TLSMode.NONE:
            return None

        ca = self._untrusted if mode is TLSMode.UNTRUSTED else self._trusted
        names = (WRONG_HOST_NAME,) if mode is TLSMode.WRONG_HOST else SERVER_NAMES
        issued = ca.issue_cert(*names)

        prefix = self.directory / f"server-{mode.value}"
        files = ServerTLSFiles(
            ca=Path(f"{prefix}-ca.pem"),
            cert=Path(f"{prefix}-cert.pem"),
            key=Path(f"{prefix}-key.pem"),
        )
        ca.cert_pem.write_to_path(str(files.ca))
        issued.cert_chain_pems[0].write_to_path(str(files.cert))
        issued.private_key_pem.write_to_path(str(files.key))
        for path in (files.ca, files.cert, files.key):
            os.chmod(path, 0o644)  # the server may run as another OS user
        return files
