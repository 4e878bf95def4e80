"""securemysql.sqlalchemy against the sandbox: every physical connect logs in with a token.

Covers the creator hook, the engine helper and the URL plugin, which a fresh interpreter
also finds through its entry point. Further tests kill connections, check that connection
arguments stay unchanged, and run concurrent transactions for several token lifetimes
while the pool recycles and invalidates connections.
"""

from __future__ import annotations

import concurrent.futures
import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import certifi
import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event

import securemysql.sqlalchemy as secure_sa
from securemysql.errors import CertificateVerificationError
from securemysql.factory import ConnectionFactory
from securemysql.sandbox import Sandbox

pytestmark = pytest.mark.integration

_MYSQLCONNECTOR_MISSING = importlib.util.find_spec("securemysql.drivers.mysqlconnector") is None

DRIVERS = [
    pytest.param("pymysql", id="pymysql"),
    pytest.param(
        "mysql.connector",
        id="mysqlconnector",
        marks=pytest.mark.skipif(
            _MYSQLCONNECTOR_MISSING,
            reason="securemysql.drivers.mysqlconnector does not exist yet",
        ),
    ),
]
SCHEMES = {"pymysql": "mysql+pymysql", "mysql.connector": "mysql+mysqlconnector"}


def _url(
    sandbox: Sandbox, driver: str, *, plugin: bool = False, user: str = "", **query: str
) -> str:
    """Return the sandbox's URL for ``driver``, with its CA bundle and ``query`` options."""
    info = sandbox.info
    options = {"plugin": "securemysql"} if plugin else {}
    options.update({"ssl_ca": info.ssl_ca, **query})
    return (
        f"{SCHEMES[driver]}://{user or info.user}@{info.host}:{info.port}/{info.database}"
        f"?{urllib.parse.urlencode(options)}"
    )


def _session(connection: sqlalchemy.Connection) -> dict[str, Any]:
    user = connection.exec_driver_sql("SELECT CURRENT_USER()").scalar_one()
    connection_id = connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
    tls = connection.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_version'").one()[1]
    return {"user": str(user), "id": int(connection_id), "tls": str(tls)}


@pytest.fixture
def engines() -> Iterator[list[sqlalchemy.Engine]]:
    """Engines to dispose of after the test, so that no pooled connection outlives it."""
    created: list[sqlalchemy.Engine] = []
    yield created
    for engine in created:
        engine.dispose()


# --- The three ways in ---------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_creator_hook_connects(
    sandbox: Sandbox, driver: str, engines: list[sqlalchemy.Engine]
) -> None:
    info = sandbox.info
    factory = ConnectionFactory(
        info.host,
        info.user,
        port=info.port,
        database=info.database,
        ssl_ca=info.ssl_ca,
        driver=driver,
    )
    engine = sqlalchemy.create_engine(f"{SCHEMES[driver]}://", creator=factory)
    engines.append(engine)

    with engine.connect() as connection:
        session = _session(connection)

    assert session["user"] == "sandbox-app@%"
    assert session["tls"] in ("TLSv1.2", "TLSv1.3")
    assert sandbox.identity.request_count == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_helper_engine_round_trip(
    sandbox: Sandbox, driver: str, engines: list[sqlalchemy.Engine]
) -> None:
    engine = secure_sa.create_engine(_url(sandbox, driver, charset="utf8mb4"))
    engines.append(engine)
    table = f"helper_{driver.replace('.', '_')}"

    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        connection.exec_driver_sql(f"CREATE TABLE {table} (id INT PRIMARY KEY, note VARCHAR(20))")
        connection.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 'same')")  # noqa: S608
        # The dialect's CLIENT.FOUND_ROWS reaches the driver only through the URL
        # mapping: without it an UPDATE that changes nothing reports 0 rows.
        update = f"UPDATE {table} SET note = 'same' WHERE id = 1"  # noqa: S608
        unchanged = connection.exec_driver_sql(update)
        rowcount = unchanged.rowcount
        session = _session(connection)
        connection.exec_driver_sql(f"DROP TABLE {table}")

    assert rowcount == 1
    assert session["user"] == "sandbox-app@%"
    assert session["tls"] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("driver", DRIVERS)
def test_url_plugin_in_process(
    sandbox: Sandbox, driver: str, engines: list[sqlalchemy.Engine]
) -> None:
    engine = sqlalchemy.create_engine(_url(sandbox, driver, plugin=True))
    engines.append(engine)

    with engine.connect() as connection:
        session = _session(connection)

    assert session["user"] == "sandbox-app@%"
    assert session["tls"] in ("TLSv1.2", "TLSv1.3")
    assert "ssl_ca" not in engine.url.query


@pytest.mark.parametrize("driver", DRIVERS)
def test_url_plugin_fresh_interpreter(sandbox: Sandbox, driver: str) -> None:
    url = _url(sandbox, driver, plugin=True)
    code = f"""
        import json
        import sys

        import sqlalchemy

        engine = sqlalchemy.create_engine({url!r})
        with engine.connect() as connection:
            user = connection.exec_driver_sql("SELECT CURRENT_USER()").scalar_one()
            status = connection.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_version'")
            tls = status.one()[1]
        engine.dispose()
        print(json.dumps({{
            "user": user,
            "tls": tls,
            "plugin_module_loaded": "securemysql.sqlalchemy" in sys.modules,
        }}))
    """
    environment = {**os.environ, **sandbox.info.env}

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["user"] == "sandbox-app@%"
    assert output["tls"] in ("TLSv1.2", "TLSv1.3")
    assert output["plugin_module_loaded"] is True


def test_user_assigned_identity_from_url(
    sandbox: Sandbox, engines: list[sqlalchemy.Engine]
) -> None:
    info = sandbox.info
    url = _url(
        sandbox,
        "pymysql",
        plugin=True,
        user=info.user_assigned_user,
        azure_client_id=info.user_assigned_client_id,
    )
    engine = sqlalchemy.create_engine(url)
    engines.append(engine)

    with engine.connect() as connection:
        session = _session(connection)

    assert session["user"] == f"{info.user_assigned_user}@%"


def test_untrusted_ca_rejected(sandbox: Sandbox, engines: list[sqlalchemy.Engine]) -> None:
    engine = sqlalchemy.create_engine(
        _url(sandbox, "pymysql", plugin=True, ssl_ca=certifi.where(), retry_max_attempts="1")
    )
    engines.append(engine)
    accepted_before = sandbox.verifier.accepted

    with pytest.raises(CertificateVerificationError):
        engine.connect()

    assert sandbox.verifier.accepted == accepted_before


# --- Killed connections ---------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_connections_replaced(
    sandbox: Sandbox, driver: str, engines: list[sqlalchemy.Engine]
) -> None:
    engine = secure_sa.create_engine(_url(sandbox, driver), pool_size=3, max_overflow=0)
    engines.append(engine)
    connections = [engine.connect() for _ in range(3)]
    ids_before = {_session(connection)["id"] for connection in connections}
    for connection in connections:
        connection.close()

    killed = sandbox.kill_connections()
    connections = [engine.connect() for _ in range(3)]
    sessions = [_session(connection) for connection in connections]
    for connection in connections:
        connection.close()

    assert killed >= 3
    assert len(ids_before) == 3
    assert {session["id"] for session in sessions}.isdisjoint(ids_before)
    assert all(session["user"] == "sandbox-app@%" for session in sessions)


@pytest.mark.parametrize("driver", DRIVERS)
def test_killed_connection_without_pre_ping(
    sandbox: Sandbox, driver: str, engines: list[sqlalchemy.Engine]
) -> None:
    engine = secure_sa.create_engine(
        _url(sandbox, driver), pool_size=1, max_overflow=0, pool_pre_ping=False
    )
    engines.append(engine)
    with engine.connect() as connection:
        id_before = _session(connection)["id"]
    sandbox.kill_connections()

    with engine.connect() as connection:
        with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
            connection.exec_driver_sql("SELECT 1")
        invalidated = info.value.connection_invalidated
    with engine.connect() as connection:
        id_after = _session(connection)["id"]

    assert invalidated
    assert id_after != id_before


# --- Connection arguments are a read-only template ---------------------------------------


def _template_arguments(driver: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "charset": "utf8mb4",
        "init_command": "SET @securemysql_probe = 7",
    }
    if driver == "mysql.connector":
        # mysql-connector-python adds its default attributes to the conn_attrs dict
        # it is given, so a template shared between connects would grow.
        arguments["conn_attrs"] = {"app": "billing"}
    else:
        import pymysql.converters

        arguments["conv"] = dict(pymysql.converters.conversions)
    return arguments


def _engine_with_arguments(
    sandbox: Sandbox, driver: str, path: str, arguments: dict[str, Any]
) -> tuple[sqlalchemy.Engine, ConnectionFactory]:
    """Return an engine without a pool (one physical connect per checkout) and its factory."""
    if path == "helper":
        engine = secure_sa.create_engine(
            _url(sandbox, driver), connect_args=arguments, poolclass=sqlalchemy.pool.NullPool
        )
        helper_factory = secure_sa.connection_factory(engine)
        assert helper_factory is not None
        return engine, helper_factory

    info = sandbox.info
    factory = ConnectionFactory(
        info.host,
        info.user,
        port=info.port,
        database=info.database,
        ssl_ca=info.ssl_ca,
        driver=driver,
        **arguments,
    )
    engine = sqlalchemy.create_engine(
        f"{SCHEMES[driver]}://", creator=factory, poolclass=sqlalchemy.pool.NullPool
    )
    secure_sa.install_disconnect_handler(engine)
    return engine, factory


@pytest.mark.parametrize("path", ["helper", "creator"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_connect_args_unchanged_after_connects(
    sandbox: Sandbox, driver: str, path: str, engines: list[sqlalchemy.Engine]
) -> None:
    arguments = _template_arguments(driver)
    snapshot = copy.deepcopy(arguments)
    engine, factory = _engine_with_arguments(sandbox, driver, path, arguments)
    engines.append(engine)
    factory_arguments = copy.deepcopy(dict(factory.driver_kwargs))

    sessions = []
    for _ in range(2):
        with engine.connect() as connection:
            probe = connection.exec_driver_sql("SELECT @securemysql_probe").scalar_one()
            sessions.append((_session(connection)["id"], int(probe)))

    assert sessions[0][0] != sessions[1][0]
    assert [probe for _, probe in sessions] == [7, 7]
    assert arguments == snapshot
    assert dict(factory.driver_kwargs) == factory_arguments


def test_password_from_other_listener_ignored(
    sandbox: Sandbox, engines: list[sqlalchemy.Engine]
) -> None:
    calls: list[dict[str, Any]] = []
    rejections_before = len(sandbox.verifier.rejections)

    def inject_password(
        dialect: Any, connection_record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        # What a listener written for password logins does; securemysql must not send it.
        cparams["password"] = "not-an-access-token"
        calls.append(dict(cparams))

    # A listener on the Engine class runs before the engine's own listeners.
    event.listen(sqlalchemy.Engine, "do_connect", inject_password)
    try:
        engine = sqlalchemy.create_engine(_url(sandbox, "pymysql", plugin=True))
        engines.append(engine)
        with engine.connect() as connection:
            session = _session(connection)
    finally:
        event.remove(sqlalchemy.Engine, "do_connect", inject_password)

    assert len(calls) == 1
    assert calls[0]["password"] == "not-an-access-token"
    assert session["user"] == "sandbox-app@%"
    assert len(sandbox.verifier.rejections) == rejections_before


# --- Several token lifetimes of concurrent transactions -------------------------------------

TOKEN_LIFETIME = 6.0
RUN_SECONDS = 27.0
WORKERS = 5
POOL_RECYCLE = 2
INVALIDATE_EVERY = 8


def _run_worker(engine: sqlalchemy.Engine, worker: int, deadline: float) -> int:
    """Commit transactions until ``deadline``; return how many were committed."""
    committed = 0
    while time.monotonic() < deadline:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO stress_rows (worker, seq) VALUES (%s, %s)", (worker, committed)
            )
            rows = connection.exec_driver_sql(
                "SELECT COUNT(*) FROM stress_rows WHERE worker = %s", (worker,)
            ).scalar_one()
            if rows != committed + 1:
                raise AssertionError(f"worker {worker} sees {rows} rows, expected {committed + 1}")
        committed += 1

        if committed % INVALIDATE_EVERY == 0:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
                connection.invalidate()
        time.sleep(0.02)
    return committed


@pytest.mark.slow
def test_transactions_across_token_lifetimes(
    sandbox: Sandbox, engines: list[sqlalchemy.Engine]
) -> None:
    sandbox.identity.token_lifetime = TOKEN_LIFETIME
    engine = secure_sa.create_engine(
        _url(sandbox, "pymysql"),
        pool_size=2,
        max_overflow=2,
        pool_recycle=POOL_RECYCLE,
        pool_timeout=120,
    )
    engines.append(engine)
    physical_connects = 0
    lock = threading.Lock()

    def count_connect(dbapi_connection: Any, connection_record: Any) -> None:
        nonlocal physical_connects
        with lock:
            physical_connects += 1

    event.listen(engine, "connect", count_connect)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS stress_rows")
        connection.exec_driver_sql(
            "CREATE TABLE stress_rows (id INT AUTO_INCREMENT PRIMARY KEY,"
            " worker INT NOT NULL, seq INT NOT NULL, UNIQUE KEY (worker, seq))"
        )
    rejections_before = len(sandbox.verifier.rejections)
    requests_before = sandbox.identity.request_count

    deadline = time.monotonic() + RUN_SECONDS
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as executor:
        futures = [executor.submit(_run_worker, engine, n, deadline) for n in range(WORKERS)]
        committed = [future.result(timeout=RUN_SECONDS + 300) for future in futures]

    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT worker, COUNT(*), MIN(seq), MAX(seq) FROM stress_rows GROUP BY worker"
        ).all()
        connection.exec_driver_sql("DROP TABLE stress_rows")
    identity_requests = sandbox.identity.request_count - requests_before

    assert all(count > 0 for count in committed)
    assert sorted((row[0], row[1], row[2], row[3]) for row in stored) == [
        (worker, count, 0, count - 1) for worker, count in enumerate(committed)
    ]
    # Every login was accepted, so each new connection carried a token that was current.
    assert len(sandbox.verifier.rejections) == rejections_before
    # The pool replaced connections many times within each token lifetime.
    assert physical_connects >= 2 * RUN_SECONDS / POOL_RECYCLE
    # Tokens are fetched about once per refresh interval (3/4 of the lifetime for
    # tokens this short), not once per connect.
    assert identity_requests >= RUN_SECONDS / TOKEN_LIFETIME - 1
    assert identity_requests <= 2 * RUN_SECONDS / TOKEN_LIFETIME + 3
    assert identity_requests * 4 < physical_connects
