"""A private MariaDB instance: its own datadir, 127.0.0.1 (by default) and a free port.

The instance loads MariaDB's PAM plugin with the clear-text switch on, so that
token users are asked for ``mysql_clear_password`` as on Azure Database for
MySQL, and PAM hands the token to the sandbox's verifier.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pymysql

from securemysql.sandbox.errors import SandboxError

logger = logging.getLogger("securemysql.sandbox.server")

_INSTALL_HINT = "apt-get update && apt-get install -y mariadb-server mariadb-client libpam-script"
_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 30.0


def find_program(name: str) -> str:
    """Return the path of a MariaDB program, or raise SandboxError with the install command."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SandboxError(f"{name} was not found. Install MariaDB with: {_INSTALL_HINT}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Watches the process that started the server and, once it is gone (killed, say,
# with SIGKILL, so no cleanup ran), stops the server and removes the given paths.
# PR_SET_PDEATHSIG cannot do this: the kernel clears it when mariadbd switches
# to the mysql user.
_WATCHDOG_SCRIPT = """
parent=$1; server=$2; shift 2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
kill -TERM "$server" 2>/dev/null
for _ in $(seq 60); do kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
kill -KILL "$server" 2>/dev/null
rm -rf -- "$@"
"""


@dataclass(frozen=True)
class ServerTLSFiles:
    """PEM files the server presents; None for a server without TLS."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class MariaDBServer:
    """Controls one private ``mariadbd`` process.

    ``init_sql`` runs at every start (``--init-file``), so it must be idempotent.
    """

    directory: Path
    os_user: str
    port: int
    admin_user: str
    admin_password: str
    init_sql: str
    max_connections: int = 200
    performance_schema: bool = True
    bind_address: str = "127.0.0.1"
    require_secure_transport: bool = True
    # Removed by the watchdog if the starting process dies without stopping the server.
    cleanup_paths: Sequence[Path] = ()
    extra_args: Sequence[str] = ()

    def __post_init__(self) -> None:
        self.datadir = self.directory / "data"
        # The server's own files live in directories it owns: it may run as ``mysql``.
        self.rundir = self.directory / "run"
        self.socket_path = self.rundir / "mysqld.sock"
        self.pid_file = self.rundir / "mysqld.pid"
        self.error_log = self.rundir / "mysqld.err"
        self.tmpdir = self.directory / "tmp"
        self.init_file = self.directory / "init.sql"
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._watchdog: Optional[subprocess.Popen[bytes]] = None

    # --- lifecycle -------------------------------------------------------

    def install(self) -> None:
        """Create the datadir with ``mariadb-install-db``."""
        for directory in (self.tmpdir, self.rundir):
            directory.mkdir(parents=True, exist_ok=True)
            self._give_to_server_user(directory)
        command = [
            find_program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={self.os_user}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env=self._environment()
        )
        if result.returncode != 0:
            raise SandboxError(
                f"mariadb-install-db failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-2000:]}"
            )

    def start(self, tls: Optional[ServerTLSFiles]) -> None:
        """Start the server and wait until the admin user can log in."""
        if self.is_running():
            raise SandboxError(f"the server on port {self.port} is already running")

        self.init_file.write_text(self.init_sql)
        os.chmod(self.init_file, 0o644)
        command = self._command(tls)
        logger.info(
            "starting mariadbd on %s:%d (datadir %s)", self.bind_address, self.port, self.datadir
        )
        with open(self.error_log, "ab") as log:
            self._process = subprocess.Popen(
                command,
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._start_watchdog(self._process.pid)
        self._wait_until_ready()

    def _start_watchdog(self, server_pid: int) -> None:
        # A session of its own, so that Ctrl-C in the terminal does not stop it early.
        bash = shutil.which("bash") or "/bin/bash"
        self._watchdog = subprocess.Popen(
            [bash, "-c", _WATCHDOG_SCRIPT, "securemysql-sandbox-watchdog",
             str(os.getpid()), str(server_pid), *map(str, self.cleanup_paths)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s); do nothing if it is not running."""
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
            self._watchdog = None

        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "mariadbd did not stop within %.0f s; killing it", _STOP_TIMEOUT_SECONDS
                )
                process.kill()
                process.wait()
        self._process = None
        logger.info("stopped mariadbd on port %d", self.port)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid

    # --- administration --------------------------------------------------

    @contextlib.contextmanager
    def admin_connection(self) -> Iterator[pymysql.connections.Connection[Any]]:
        """Yield a PyMySQL connection as the admin user over the Unix socket."""
        connection = pymysql.connect(
            unix_socket=str(self.socket_path),
            user=self.admin_user,
            password=self.admin_password,
            autocommit=True,
            connect_timeout=10,
        )
        try:
            yield connection
        finally:
            connection.close()

    def query(self, sql: str, args: Optional[Sequence[Any]] = None) -> list[tuple[Any, ...]]:
        """Run one statement as the admin user and return all rows."""
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def kill_client_connections(self) -> int:
        """Kill every client connection except the admin's own; return how many."""
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump') "
                "AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user')"
            )
            ids = [row[0] for row in cursor.fetchall()]
            killed = 0
            for connection_id in ids:
                try:
                    cursor.execute(f"KILL CONNECTION {int(connection_id)}")
                    killed += 1
                except pymysql.err.OperationalError:
                    pass  # the connection ended on its own meanwhile
        logger.info("killed %d client connections", killed)
        return killed

    # --- internals -------------------------------------------------------

    def _command(self, tls: Optional[ServerTLSFiles]) -> list[str]:
        command = [
            find_program("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={self.os_user}",
            f"--bind-address={self.bind_address}",
            f"--port={self.port}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--tmpdir={self.tmpdir}",
            f"--log-error={self.error_log}",
            f"--init-file={self.init_file}",
            "--skip-name-resolve",
            "--plugin-load-add=auth_pam_v1",
            "--pam-use-cleartext-plugin=ON",
            f"--max-connections={self.max_connections}",
            "--innodb-buffer-pool-size=32M",
            "--skip-log-bin",
            f"--performance-schema={'ON' if self.performance_schema else 'OFF'}",
        ]
        if tls is None:
            command.append("--skip-ssl")
        else:
            command += [f"--ssl-ca={tls.ca}", f"--ssl-cert={tls.cert}", f"--ssl-key={tls.key}"]
            if self.require_secure_transport:
                # Azure Database for MySQL Flexible Server's default.
                command.append("--require-secure-transport=ON")
        return command + list(self.extra_args)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        last_error: Optional[BaseException] = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise SandboxError(
                    f"mariadbd exited with code {self._process.returncode} during start-up; "
                    f"its log ends with:\n{self.error_log_tail()}"
                )
            try:
                self.query("SELECT 1")
                return
            except pymysql.err.MySQLError as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise SandboxError(
            f"mariadbd did not accept connections within {_START_TIMEOUT_SECONDS:.0f} s "
            f"(last error: {last_error}); its log ends with:\n{self.error_log_tail()}"
        )

    def _environment(self) -> dict[str, str]:
        # MariaDB writes temporary files to TMPDIR, which may be private to root.
        return {**os.environ, "TMPDIR": str(self.tmpdir)}

    def error_log_tail(self, lines: int = 20) -> str:
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return "(no error log)"
        return "\n".join(text.splitlines()[-lines:])

    def _give_to_server_user(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(self.os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
