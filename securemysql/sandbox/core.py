"""The sandbox: a local server that behaves like Azure Database for MySQL.

It combines a private MariaDB instance (TLS from a test CA, token users that
log in with ``mysql_clear_password``), a token verifier that validates logins
as Azure does, and a loopback managed-identity endpoint that ``azure-identity``
calls for tokens. Everything listens on 127.0.0.1 (unless a container set-up
sets another bind address) and stops with ``stop()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from securemysql.sandbox import pam
from securemysql.sandbox.authority import (
    AZURE_MYSQL_AUDIENCE,
    Identity,
    TokenAuthority,
    new_signing_key,
)
from securemysql.sandbox.certs import SandboxCertificates, TLSMode
from securemysql.sandbox.errors import SandboxError
from securemysql.sandbox.identity import IdentityEndpoint
from securemysql.sandbox.server import MariaDBServer, find_program, free_port
from securemysql.sandbox.verifier import TokenVerifier

logger = logging.getLogger("securemysql.sandbox")

DATABASE = "appdb"
TOKEN_USER = "sandbox-app"  # the system-assigned managed identity's MySQL user
USER_ASSIGNED_USER = "sandbox-uami"
NATIVE_USER = "sandbox_native"  # a password user, for comparisons only
ADMIN_USER = "sandbox_admin"
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class SandboxInfo:
    """Connection details of a running sandbox, as ``sandbox up --json`` prints them.

    ``env`` contains the variables that point ``azure-identity`` at the sandbox's
    managed-identity endpoint. Passwords of the native and admin users are for
    tests and benchmarks of the sandbox itself.
    """

    host: str
    port: int
    user: str
    database: str
    ssl_ca: str
    env: Mapping[str, str]
    tls_mode: str
    user_assigned_client_id: str
    user_assigned_user: str
    native_user: str
    native_password: str = field(repr=False)
    admin_user: str
    admin_password: str = field(repr=False)
    socket: str
    pid: int

    def to_json_dict(self) -> dict[str, Any]:
        """Return the details as JSON-ready data, without the native and admin passwords."""
        data = asdict(self)
        data["env"] = dict(self.env)
        del data["native_password"], data["admin_password"]
        return data


class Sandbox:
    """Start, control and stop one Azure-like MariaDB sandbox.

    Use as a context manager, or call ``start()`` and ``stop()``; ``stop()`` is
    safe to call more than once and removes everything the sandbox created.

    Args:
        tls: what the server offers on TLS (see ``TLSMode``).
        token_lifetime: lifetime in seconds of tokens the identity endpoint issues.
        max_connections: the server's ``max_connections``.
        base_directory: parent of the sandbox's temporary directory.
        performance_schema: turn on ``performance_schema``, which connection attributes
            need. It makes every token login about 3 ms slower (measured with
            bench/login_cost.py), because the server process that forks the PAM script
            is larger.
    """

    def __init__(
        self,
        *,
        tls: TLSMode | str = TLSMode.VERIFIED,
        token_lifetime: float = 3600.0,
        max_connections: int = 200,
        base_directory: Optional[str] = None,
        performance_schema: bool = False,
        port: Optional[int] = None,
        identity_port: Optional[int] = None,
        bind_address: str = "127.0.0.1",
        require_secure_transport: bool = True,
    ) -> None:
        self.tls_mode = TLSMode(tls)
        self._token_lifetime = token_lifetime
        self._max_connections = max_connections
        self._base_directory = base_directory
        self._performance_schema = performance_schema
        self._port = port
        self._identity_port = identity_port
        self._bind_address = bind_address
        self.require_secure_transport = require_secure_transport
        self._directory: Optional[Path] = None
        self._pam_service: Optional[str] = None
        self._started = False

        self.authority = TokenAuthority()
        self.system_identity = Identity(mysql_user=TOKEN_USER, client_id=str(uuid.uuid4()))
        self.user_assigned_identity = Identity(
            mysql_user=USER_ASSIGNED_USER, client_id=str(uuid.uuid4())
        )
        self.authority.register(self.system_identity)
        self.authority.register(self.user_assigned_identity)
        self.admin_password = secrets.token_urlsafe(18)
        self.native_password = secrets.token_urlsafe(18)

    # --- lifecycle -------------------------------------------------------

    def start(self) -> Sandbox:
        """Start verifier, identity endpoint and server; clean up fully on failure."""
        if self._started:
            raise SandboxError("this sandbox is already started")
        self._check_prerequisites()
        try:
            self._start_components()
        except BaseException:
            self.stop()
            raise
        self._started = True
        logger.info("sandbox ready on %s:%d", self._bind_address, self.server.port)
        return self

    def stop(self) -> None:
        """Stop every component and remove the temporary directory and PAM service."""
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        for component in ("identity", "verifier"):
            running = getattr(self, component, None)
            if running is not None:
                with contextlib.suppress(OSError):
                    running.stop()
                delattr(self, component)
        if self._pam_service is not None:
            pam.remove_service(self._pam_service)
            self._pam_service = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self._started = False

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _check_prerequisites(self) -> None:
        find_program("mariadbd")
        find_program("mariadb-install-db")
        pam.check_prerequisites()

    def _start_components(self) -> None:
        pam.remove_stale_services()
        self._directory = Path(
            tempfile.mkdtemp(
                prefix="securemysql-sandbox-", dir=_parent_directory(self._base_directory)
            )
        )
        os.chmod(self._directory, 0o755)

        self.certificates = SandboxCertificates(self._directory / "tls")
        self.verifier = TokenVerifier(self.authority)
        self.verifier.start()
        script_directory = self._directory / "pam"
        self.verifier.write_pam_script(script_directory)
        self._pam_service = f"{pam.SERVICE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        pam.create_service(self._pam_service, script_directory, self.verifier.port)

        self.identity = IdentityEndpoint(
            self.authority,
            self.system_identity,
            {self.user_assigned_identity.client_id or "": self.user_assigned_identity},
            token_lifetime=self._token_lifetime,
            bind_address=self._bind_address,
            port=self._identity_port or 0,
        )
        self.identity.start()

        self.server = MariaDBServer(
            directory=self._directory,
            os_user=_server_os_user(),
            port=self._port or free_port(),
            admin_user=ADMIN_USER,
            admin_password=self.admin_password,
            init_sql=self._init_sql(),
            max_connections=self._max_connections,
            performance_schema=self._performance_schema,
            bind_address=self._bind_address,
            require_secure_transport=self.require_secure_transport,
            cleanup_paths=(self._directory, pam.PAM_DIRECTORY / self._pam_service),
        )
        self.server.install()
        self._start_server_on_free_port()

    def _start_server_on_free_port(self) -> None:
        # free_port() only saw the port free a moment ago: another process (say a
        # second sandbox) may bind it first, so a chosen port gets a few more tries.
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self.server.start(self.certificates.server_files(self.tls_mode))
                return
            except SandboxError:
                port_taken = "Bind on TCP/IP port" in self.server.error_log_tail()
                if self._port is not None or not port_taken or attempt == _PORT_ATTEMPTS - 1:
                    raise
                logger.warning("port %d was taken meanwhile; trying another", self.server.port)
                self.server.port = free_port()

    def _init_sql(self) -> str:
        service = self._pam_service
        token_users = [self.system_identity.mysql_user, self.user_assigned_identity.mysql_user]
        statements = [
            "DELETE FROM mysql.global_priv WHERE User = ''",
            "FLUSH PRIVILEGES",
            f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
            f"CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'%' IDENTIFIED BY '{self.admin_password}'",
            f"CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'localhost' "
            f"IDENTIFIED BY '{self.admin_password}'",
            f"GRANT ALL ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION",
            f"GRANT ALL ON *.* TO '{ADMIN_USER}'@'localhost' WITH GRANT OPTION",
            f"CREATE USER IF NOT EXISTS '{NATIVE_USER}'@'%' IDENTIFIED BY '{self.native_password}'",
            f"GRANT ALL ON {DATABASE}.* TO '{NATIVE_USER}'@'%'",
        ]
        for user in token_users:
            statements.append(
                f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED VIA pam USING '{service}'"
            )
            statements.append(f"GRANT ALL ON {DATABASE}.* TO '{user}'@'%'")
            statements.append(f"GRANT PROCESS ON *.* TO '{user}'@'%'")
        return "".join(f"{statement};\n" for statement in statements)

    # --- information -----------------------------------------------------

    @property
    def info(self) -> SandboxInfo:
        self._require_started()
        return SandboxInfo(
            host="127.0.0.1",
            port=self.server.port,
            user=TOKEN_USER,
            database=DATABASE,
            ssl_ca=str(self.certificates.ca_file),
            env=self.identity.environment(),
            tls_mode=self.tls_mode.value,
            user_assigned_client_id=self.user_assigned_identity.client_id or "",
            user_assigned_user=USER_ASSIGNED_USER,
            native_user=NATIVE_USER,
            native_password=self.native_password,
            admin_user=ADMIN_USER,
            admin_password=self.admin_password,
            socket=str(self.server.socket_path),
            pid=os.getpid(),
        )

    @contextlib.contextmanager
    def environment(self) -> Iterator[Mapping[str, str]]:
        """Set the identity endpoint's variables in ``os.environ`` for the block, then restore."""
        self._require_started()
        variables = self.identity.environment()
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield variables
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # --- controls --------------------------------------------------------

    def mint_token(
        self,
        *,
        user: Optional[str] = None,
        lifetime: Optional[float] = None,
        audience: str = AZURE_MYSQL_AUDIENCE,
        wrong_key: bool = False,
    ) -> str:
        """Sign a token directly (without the endpoint), for tests of bad tokens.

        ``user`` picks a registered identity by MySQL user name (default: the
        system identity); ``wrong_key`` signs with a key the server does not trust.
        """
        identity = self.authority.identities.get(user or TOKEN_USER)
        if identity is None:
            identity = Identity(mysql_user=user or TOKEN_USER)
        signing_key = new_signing_key() if wrong_key else None
        token, _ = self.authority.mint(
            identity,
            lifetime=self.identity.token_lifetime if lifetime is None else lifetime,
            audience=audience,
            signing_key=signing_key,
        )
        return token

    def restart(self, *, tls: Optional[TLSMode | str] = None) -> None:
        """Restart the server, optionally with another TLS mode; data is kept."""
        self._require_started()
        if tls is not None:
            self.tls_mode = TLSMode(tls)
        self.server.stop()
        self.server.start(self.certificates.server_files(self.tls_mode))

    def stop_server(self) -> None:
        """Stop only the database server (the endpoint and verifier keep running)."""
        self._require_started()
        self.server.stop()

    def start_server(self) -> None:
        self._require_started()
        self.server.start(self.certificates.server_files(self.tls_mode))

    def kill_connections(self) -> int:
        self._require_started()
        return self.server.kill_client_connections()

    def set_require_secure_transport(self, enabled: bool) -> None:
        self._require_started()
        self.server.query(f"SET GLOBAL require_secure_transport = {'ON' if enabled else 'OFF'}")

    def set_max_connections(self, limit: int) -> int:
        """Set the server's ``max_connections`` and return the value now in effect.

        MariaDB 10.11 raises values below 10 to 10, and admits one connection more
        for an account with SUPER, such as the sandbox's admin user (not the token
        users), so that an administrator can still log in.
        """
        self._require_started()
        self.server.query(f"SET GLOBAL max_connections = {int(limit)}")
        return int(self.server.query("SELECT @@GLOBAL.max_connections")[0][0])

    def rotate_signing_key(self) -> None:
        """Replace the signing key: tokens issued before are rejected at login."""
        self.authority.rotate_signing_key()

    def _require_started(self) -> None:
        if not self._started and getattr(self, "server", None) is None:
            raise SandboxError("the sandbox is not started; call start() first")


def _parent_directory(requested: Optional[str]) -> str:
    """Return where to create the sandbox directory: ``requested``, else the temp dir.

    As root the server runs as ``mysql``, which must reach its datadir. A private
    temporary directory (pytest's, or a TMPDIR of mode 0700) is not reachable, so
    the world-traversable /tmp is used instead.
    """
    if requested is not None:
        return requested
    default = tempfile.gettempdir()
    if os.geteuid() != 0 or _traversable_by_all(Path(default)):
        return default
    logger.info("the temporary directory %s is private; the sandbox uses /tmp", default)
    return "/tmp"  # noqa: S108 - the server's OS user must reach it; contents are 0755 dirs


def _traversable_by_all(path: Path) -> bool:
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in [path, *path.parents])


def _server_os_user() -> str:
    """Return the OS user to run ``mariadbd`` as: ``mysql`` when root, else the current user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("mysql")
    except KeyError as exc:
        raise SandboxError(
            "the OS user 'mysql' does not exist; install MariaDB with: "
            "apt-get update && apt-get install -y mariadb-server"
        ) from exc
    return "mysql"
