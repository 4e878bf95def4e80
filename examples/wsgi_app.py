"""A small web app that serves requests from a pooled SQLAlchemy engine with token logins.

It uses only the standard library's WSGI server, so it runs without Flask. The
``app`` function is a WSGI application that gunicorn, uWSGI or mod_wsgi can
serve as it is. A Flask or FastAPI app would create the engine the same way:
once per process, at start-up, shared between requests.

Routes:
    GET  /health   runs SELECT 1; 503 when the database is unreachable for now
    GET  /whoami   JSON: the MySQL user and TLS version of a pooled connection
    POST /visits   records a visit and returns the number of visits as JSON

Settings come from the environment, as in pymysql_basic.py (AZURE_MYSQL_HOST,
AZURE_MYSQL_USER, AZURE_MYSQL_PORT, AZURE_MYSQL_DATABASE, AZURE_MYSQL_SSL_CA),
plus APP_HOST (default 127.0.0.1) and APP_PORT (default 8000; 0 picks a free
port). The first line on standard output is ``Serving on http://HOST:PORT``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sqlalchemy import URL, Engine, text

import securemysql
from securemysql.sqlalchemy import create_engine

logger = logging.getLogger("wsgi_app")

StartResponse = Callable[..., Any]


def build_engine() -> Engine:
    """Create the process's engine: at most 10 connections, replaced when broken."""
    url = URL.create(
        "mysql+pymysql",
        username=os.environ["AZURE_MYSQL_USER"],
        host=os.environ["AZURE_MYSQL_HOST"],
        port=int(os.environ.get("AZURE_MYSQL_PORT", "3306")),
        database=os.environ.get("AZURE_MYSQL_DATABASE"),
    )
    return create_engine(
        url, ssl_ca=os.environ.get("AZURE_MYSQL_SSL_CA"), pool_size=5, max_overflow=5
    )


def create_visits_table(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS visits ("
                " id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                " visited_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
        )


def make_app(engine: Engine) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """Return the WSGI application that serves the routes above from ``engine``."""

    def respond(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
        payload = json.dumps(body).encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def route(method: str, path: str) -> tuple[str, Any]:
        if (method, path) == ("GET", "/health"):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return "200 OK", {"status": "ok"}

        if (method, path) == ("GET", "/whoami"):
            with engine.connect() as connection:
                user = connection.execute(text("SELECT CURRENT_USER()")).scalar_one()
                tls = connection.execute(text("SHOW SESSION STATUS LIKE 'Ssl_version'")).one()
            return "200 OK", {"user": user, "tls_version": tls[1]}

        if (method, path) == ("POST", "/visits"):
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO visits () VALUES ()"))
                count = connection.execute(text("SELECT COUNT(*) FROM visits")).scalar_one()
            return "200 OK", {"visits": count}

        return "404 Not Found", {"error": f"no route for {method} {path}"}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        try:
            status, body = route(method, path)
        except Exception as exc:
            # A transient error (server restarting, failover, connection cut) is worth
            # a retry by the client; the pool has already dropped the broken connection.
            transient = securemysql.is_transient(exc)
            logger.warning("%s %s failed (%s): %s", method, path, type(exc).__name__, exc)
            status = "503 Service Unavailable" if transient else "500 Internal Server Error"
            body = {"error": "database unavailable, retry later" if transient else "failed"}
        return respond(start_response, status, body)

    return app


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """WSGIServer that handles each request in its own thread, so the pool is shared."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine = build_engine()
    create_visits_table(engine)
    server = make_server(
        os.environ.get("APP_HOST", "127.0.0.1"),
        int(os.environ.get("APP_PORT", "8000")),
        make_app(engine),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"Serving on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.dispose()


if __name__ == "__main__":
    main()
