"""Long-running token verifier that the server's PAM script asks at every login.

MariaDB's ``auth_pam`` plugin hands the clear-text password to PAM, where
``pam_script`` runs a tiny bash script (``files/pam_script_auth``) with the
password in ``PAM_AUTHTOK``. The script sends ``<user>\\n<token>\\n`` over loopback TCP
to this verifier and exits 0 only if it reads ``OK``. Keeping the verifier in a
running process avoids starting Python and PyJWT per login (about 150 ms).
"""

from __future__ import annotations

import logging
import os
import shutil
import socketserver
import stat
import threading
from collections import deque
from pathlib import Path

from securemysql.sandbox.authority import TokenAuthority

logger = logging.getLogger("securemysql.sandbox.verifier")

# Entra access tokens are 1-3 KB; anything far larger is not a token.
_MAX_LINE_BYTES = 64 * 1024
_READ_TIMEOUT_SECONDS = 5.0

_PAM_SCRIPT_SOURCE = Path(__file__).with_name("files") / "pam_script_auth"


class _Handler(socketserver.StreamRequestHandler):
    server: _VerifierTCPServer

    def handle(self) -> None:
        self.connection.settimeout(_READ_TIMEOUT_SECONDS)
        try:
            user = self.rfile.readline(_MAX_LINE_BYTES).rstrip(b"\n").decode()
            token = self.rfile.readline(_MAX_LINE_BYTES).rstrip(b"\n").decode()
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("verifier could not read a login request: %s", type(exc).__name__)
            return

        verdict = self.server.verify(user, token)
        self.wfile.write(b"OK\n" if verdict is None else b"NO\n")


class _VerifierTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, authority: TokenAuthority) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.authority = authority
        self.lock = threading.Lock()
        self.accepted = 0
        self.rejections: deque[tuple[str, str]] = deque(maxlen=1000)

    def verify(self, user: str, token: str) -> str | None:
        reason = self.authority.validate(user, token)
        with self.lock:
            if reason is None:
                self.accepted += 1
            else:
                self.rejections.append((user, reason))
        if reason is None:
            logger.debug("login accepted for user %r", user)
        else:
            logger.info("login rejected for user %r: %s", user, reason)
        return reason


class TokenVerifier:
    """Loopback TCP verifier plus the PAM script that calls it."""

    def __init__(self, authority: TokenAuthority) -> None:
        self._server = _VerifierTCPServer(authority)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="securemysql-sandbox-verifier", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def accepted(self) -> int:
        """Number of logins accepted so far."""
        with self._server.lock:
            return self._server.accepted

    @property
    def rejections(self) -> list[tuple[str, str]]:
        """Recent rejected logins as (MySQL user, reason); the newest last, at most 1000."""
        with self._server.lock:
            return list(self._server.rejections)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_pam_script(self, directory: Path) -> Path:
        """Copy ``pam_script_auth`` into ``directory``, readable and executable by all.

        The server may run as another OS user (``mysql``), which must be able to run
        it, and may not be able to read the installed package's directory.
        """
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
        script = directory / "pam_script_auth"
        shutil.copyfile(_PAM_SCRIPT_SOURCE, script)
        os.chmod(script, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        return script
