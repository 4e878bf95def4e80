"""``securemysql demo``: one real token login over verified TLS against the sandbox."""

from __future__ import annotations

import sys
import time
from typing import Any

from securemysql.errors import SecureMySQLError


def run_demo(*, driver: str = "pymysql", out: Any = None) -> int:
    """Start the sandbox, connect once with a token, print a report; return the exit code.

    The sandbox is stopped on every path, including errors and Ctrl-C.
    """
    from securemysql import ConnectionFactory, connection_tls_info
    from securemysql.check.login import query_session
    from securemysql.sandbox import Sandbox, SandboxError

    stream = out or sys.stdout
    print("Starting the local Azure-like sandbox (MariaDB with token validation)...", file=stream)
    started = time.monotonic()
    try:
        with Sandbox() as sandbox, sandbox.environment():
            info = sandbox.info
            print(
                f"Sandbox ready on {info.host}:{info.port} in {time.monotonic() - started:.1f} s.",
                file=stream,
            )
            factory = ConnectionFactory(
                info.host,
                info.user,
                port=info.port,
                database=info.database,
                ssl_ca=info.ssl_ca,
                driver=driver,
            )
            connection = factory()
            try:
                session = query_session(connection)
            finally:
                connection.close()
            client_tls = connection_tls_info(connection)
            token = factory.tokens.get_token()
            requests = sandbox.identity.request_count
    except (SecureMySQLError, SandboxError) as exc:
        print(f"Demo failed: {exc}", file=sys.stderr)
        return 1

    lines = [
        ("Driver", driver),
        ("Credential", factory.tokens.credential_name),
        ("Scope", factory.tokens.scope),
        ("Token identity", token.identity),
        ("Identity endpoint requests", str(requests)),
        ("CURRENT_USER()", session["current_user"]),
        ("Server version", session["server_version"]),
        ("TLS (server view)", f"{session['tls_version']} {session['tls_cipher']}"),
        (
            "TLS (client view)",
            f"{client_tls.version} {client_tls.cipher}" if client_tls else "unknown",
        ),
        ("Certificate check", f"chain and host name verified against {info.ssl_ca}"),
    ]
    width = max(len(label) for label, _ in lines)
    print("", file=stream)
    for label, value in lines:
        print(f"  {label.ljust(width)}  {value}", file=stream)
    print("\nSandbox stopped. The token itself was never printed.", file=stream)
    return 0
