"""Connection retries against the sandbox: restarts, a full server, killed connections.

Every factory here uses a RetryPolicy with waits of at most 1 s, and a sleep that
records each wait before it really sleeps. Tests count attempts by wrapping the
driver's ``connect`` and order events by ``time.monotonic()`` stamps. No test
asserts how long anything took.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import mysql.connector
import pytest
import sqlalchemy
from azure.identity import CredentialUnavailableError
from sqlalchemy.pool import NullPool

import securemysql
from securemysql.errors import (
    AuthenticationError,
    CertificateVerificationError,
    ConnectionFailedError,
    HostnameMismatchError,
    TokenAcquisitionError,
)
from securemysql.retry import RetryPolicy, error_number, is_transient
from securemysql.sandbox import Sandbox, TLSMode
from securemysql.sandbox.identity import Fault

pytestmark = pytest.mark.integration

HAVE_MYSQL_CONNECTOR_DRIVER = (
    importlib.util.find_spec("securemysql.drivers.mysqlconnector") is not None
)
HAVE_MYSQL_CONNECTOR_CEXT = importlib.util.find_spec("_mysql_connector") is not None

DRIVERS = [
    "pymysql",
    pytest.param(
        "mysql.connector",
        marks=pytest.mark.skipif(
            not HAVE_MYSQL_CONNECTOR_DRIVER,
            reason="securemysql.drivers.mysqlconnector does not exist yet",
        ),
    ),
]

# Upper bound on the time a test waits for a thread or a child process. It only
# keeps a broken test from hanging; no assertion depends on it.
HANG_GUARD = 60.0


# --- Recording helpers -----------------------------------------------------------------


class RecordingSleep:
    """A RetryPolicy.sleep that records each wait, signals the first one, then sleeps.

    ``before_first_wait`` runs once, when the first wait begins.
    """

    def __init__(self, before_first_wait: Optional[Callable[[], None]] = None) -> None:
        self.waits: list[float] = []
        self.first_wait = threading.Event()
        self._before_first_wait = before_first_wait

    def __call__(self, seconds: float) -> None:
        if not self.waits and self._before_first_wait is not None:
            self._before_first_wait()
        self.waits.append(seconds)
        self.first_wait.set()
        time.sleep(seconds)


@dataclass(frozen=True)
class Attempt:
    """One call of the driver's connect: when it started and how it ended."""

    started: float
    errno: Optional[int]
    succeeded: bool


class AttemptRecorder:
    """Replaces a driver's ``connect`` and records every call, then delegates."""

    def __init__(self, factory: securemysql.ConnectionFactory) -> None:
        self._connect = factory.driver.connect
        self.attempts: list[Attempt] = []

    def __call__(self, params: Any, token: str) -> Any:
        started = time.monotonic()
        try:
            connection = self._connect(params, token)
        except Exception as exc:
            self.attempts.append(Attempt(started, error_number(exc), succeeded=False))
            raise
        self.attempts.append(Attempt(started, None, succeeded=True))
        return connection


class DelayedServerStart:
    """Starts the stopped sandbox server from a timer thread after ``delay`` seconds."""

    def __init__(self, sandbox: Sandbox, delay: float) -> None:
        self._sandbox = sandbox
        self._timer = threading.Timer(delay, self._start)
        self.started_at: Optional[float] = None
        self.ready_at: Optional[float] = None
        self.error: Optional[BaseException] = None

    def _start(self) -> None:
        self.started_at = time.monotonic()
        try:
            self._sandbox.start_server()
        except BaseException as exc:  # reported by the test through self.error
            self.error = exc
        self.ready_at = time.monotonic()

    def __enter__(self) -> DelayedServerStart:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.join(timeout=HANG_GUARD)


def small_policy(sleep: RecordingSleep, **overrides: Any) -> RetryPolicy:
    settings: dict[str, Any] = {"initial_wait": 0.2, "max_wait": 1.0, "deadline": 20.0}
    settings.update(overrides)
    return RetryPolicy(sleep=sleep, **settings)


def make_factory(
    sandbox: Sandbox, retry: RetryPolicy, **overrides: Any
) -> securemysql.ConnectionFactory:
    info = sandbox.info
    arguments: dict[str, Any] = {
        "port": info.port,
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "retry": retry,
    }
    arguments.update(overrides)
    host = arguments.pop("host", info.host)
    user = arguments.pop("user", info.user)
    return securemysql.ConnectionFactory(host, user, **arguments)


def record_attempts(
    factory: securemysql.ConnectionFactory, monkeypatch: pytest.MonkeyPatch
) -> AttemptRecorder:
    recorder = AttemptRecorder(factory)
    monkeypatch.setattr(factory.driver, "connect", recorder)
    return recorder


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "securemysql.retry"]


def current_user(connection: Any) -> str:
    cursor = connection.cursor()
    cursor.execute("SELECT CURRENT_USER()")
    (user,) = cursor.fetchone()
    cursor.close()
    return str(user)


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="securemysql.retry")
    return caplog


# --- Server restart and deadline --------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_factory_reconnects_after_server_restart(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    retry_log: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep), driver=driver)
    factory().close()  # fills the token cache, so that attempts below only connect
    recorder = record_attempts(factory, monkeypatch)

    sandbox.stop_server()
    with DelayedServerStart(sandbox, delay=3.0) as restart:
        connection = factory()

    assert restart.error is None
    assert restart.started_at is not None and restart.ready_at is not None
    attempts = recorder.attempts
    failed = [attempt for attempt in attempts if not attempt.succeeded]
    assert attempts[-1].succeeded
    assert attempts[-1].started >= restart.started_at
    assert len(failed) == len(attempts) - 1
    assert len(failed) >= 2
    assert {attempt.errno for attempt in failed if attempt.started < restart.started_at} == {2003}
    assert len([attempt for attempt in attempts if attempt.started >= restart.ready_at]) <= 2
    assert current_user(connection) == "sandbox-app@%"
    connection.close()

    records = retry_records(retry_log)
    assert len(records) == len(failed) == len(sleep.waits)
    for number, (record, attempt, wait) in enumerate(zip(records, failed, sleep.waits), start=1):
        message = record.getMessage()
        assert record.levelno == logging.WARNING
        assert f"attempt {number} of " in message
        assert f"error {attempt.errno}" in message
        assert f"retrying in {wait:.2f} s" in message
        assert record.retry_errno == attempt.errno  # type: ignore[attr-defined]
    assert all(0.0 <= wait <= 1.0 for wait in sleep.waits)


@pytest.mark.parametrize("driver", DRIVERS)
def test_retries_stop_at_deadline(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    retry_log: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    sleep = RecordingSleep()
    policy = small_policy(sleep, deadline=3.0, max_attempts=1000)
    factory = make_factory(sandbox, policy, driver=driver)
    factory().close()
    recorder = record_attempts(factory, monkeypatch)

    sandbox.stop_server()
    with pytest.raises(ConnectionFailedError) as caught:
        factory()

    error = caught.value
    assert error.attempts == len(recorder.attempts)
    assert error.attempts >= 3
    assert not any(attempt.succeeded for attempt in recorder.attempts)
    assert error.elapsed >= policy.deadline - policy.max_wait
    assert error.errno == 2003
    assert error.transient is True
    assert error_number(error.__cause__) == 2003  # type: ignore[arg-type]
    assert f"after {error.attempts} attempt(s)" in str(error)
    assert "deadline=3.0 s" in str(error)
    assert len(sleep.waits) == error.attempts - 1
    assert sum(sleep.waits) <= policy.deadline
    assert len(retry_records(retry_log)) == error.attempts - 1


# mysql-connector-python's C extension resolves names inside libmysqlclient, where
# a patched socket.getaddrinfo() cannot count them, so only the pure-Python mode runs.
@pytest.mark.parametrize("driver", DRIVERS)
def test_each_attempt_resolves_host_name(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    port = sandbox.info.port
    sleep = RecordingSleep()
    options = {"use_pure": True} if driver == "mysql.connector" else {}
    factory = make_factory(
        sandbox, small_policy(sleep, max_attempts=4), host="localhost", driver=driver, **options
    )
    factory().close()
    lookups: list[tuple[Any, Any]] = []
    real_getaddrinfo = socket.getaddrinfo

    def counting_getaddrinfo(host: Any, service: Any, *args: Any, **kwargs: Any) -> Any:
        if service == port:
            lookups.append((host, service))
        return real_getaddrinfo(host, service, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting_getaddrinfo)
    recorder = record_attempts(factory, monkeypatch)
    sandbox.stop_server()

    with pytest.raises(ConnectionFailedError):
        factory()

    assert len(recorder.attempts) == 4
    assert lookups == [("localhost", port)] * 4


# --- Killed connections ------------------------------------------------------------------

# Runs in a child process: mysql-connector-python 26.x's C extension fails to import
# on Debian 12 once ssl is imported, and pytest has imported ssl long before.
CEXT_CHILD = """
import _mysql_connector  # noqa: F401  (imported before ssl, see the test module)
import json
import sys

import mysql.connector

from securemysql.retry import error_number, is_transient

settings = json.loads(sys.stdin.readline())
connection = mysql.connector.connect(**settings)
cursor = connection.cursor()
print(type(connection).__name__, flush=True)
sys.stdin.readline()

results = []
for step in ("execute", "cursor"):
    try:
        if step == "execute":
            cursor.execute("SELECT 1")
            cursor.fetchall()
        else:
            connection.cursor()
        results.append({"step": step, "raised": None})
    except Exception as exc:
        results.append(
            {"step": step, "raised": type(exc).__name__, "errno": error_number(exc),
             "transient": is_transient(exc)}
        )
print(json.dumps(results), flush=True)
"""


def connector_settings(sandbox: Sandbox, *, use_pure: bool) -> dict[str, Any]:
    """Return mysql.connector.connect() arguments for a verified-TLS token login."""
    info = sandbox.info
    return {
        "host": info.host,
        "port": info.port,
        "user": info.user,
        "password": sandbox.mint_token(),
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "ssl_verify_cert": True,
        "ssl_verify_identity": True,
        "auth_plugin": "mysql_clear_password",
        "use_pure": use_pure,
    }


@dataclass
class StatementFailure:
    """What a statement on a killed connection raised."""

    step: str
    raised: Optional[str]
    errno: Optional[int] = None
    transient: Optional[bool] = None


def statement_failures(connection: Any, cursor: Any) -> list[StatementFailure]:
    """Run a statement on an existing cursor, then open a new cursor; record what each raised."""
    failures = []
    for step in ("execute", "cursor"):
        try:
            if step == "execute":
                cursor.execute("SELECT 1")
                cursor.fetchall()
            else:
                connection.cursor().execute("SELECT 1")
            failures.append(StatementFailure(step, raised=None))
        except Exception as exc:
            failures.append(
                StatementFailure(step, type(exc).__name__, error_number(exc), is_transient(exc))
            )
    return failures


class ExtensionChild:
    """A child process that keeps a C-extension connection open until the test sends a line."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", CEXT_CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The token goes through stdin, never the command line that ps shows.
        self._send(json.dumps(settings))
        self.connection_class = self._receive()

    def run_statements(self) -> list[StatementFailure]:
        self._send("")
        results = json.loads(self._receive())
        self._process.wait(timeout=HANG_GUARD)
        return [StatementFailure(**result) for result in results]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate(timeout=HANG_GUARD)

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def _receive(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.kill()
            _, stderr = self._process.communicate(timeout=HANG_GUARD)
            pytest.fail(f"the C-extension child process failed:\n{stderr[-2000:]}")
        return line.strip()


@pytest.fixture
def extension_child(sandbox: Sandbox) -> Iterator[Optional[ExtensionChild]]:
    if not HAVE_MYSQL_CONNECTOR_CEXT:
        yield None
        return
    child = ExtensionChild(connector_settings(sandbox, use_pure=False))
    yield child
    child.close()


def connector_connection(sandbox: Sandbox) -> Any:
    """Open a pure-Python mysql-connector-python connection, through securemysql if it can."""
    if HAVE_MYSQL_CONNECTOR_DRIVER:
        factory = make_factory(
            sandbox, RetryPolicy.disabled(), driver="mysql.connector", use_pure=True
        )
        return factory()
    return mysql.connector.connect(**connector_settings(sandbox, use_pure=True))


# Error numbers of a connection that the server closed: server gone away, lost
# connection, and MariaDB's connection killed.
DISCONNECT_NUMBERS = {2006, 2013, 1927}


def test_killed_connections_report_transient_errors(
    sandbox: Sandbox, extension_child: Optional[ExtensionChild]
) -> None:
    factory = make_factory(sandbox, RetryPolicy.disabled())
    pymysql_connection = factory()
    pymysql_cursor = pymysql_connection.cursor()
    connector = connector_connection(sandbox)
    connector_cursor = connector.cursor()
    opened = 2 if extension_child is None else 3

    killed = sandbox.kill_connections()
    fresh = factory()

    assert killed >= opened
    assert current_user(fresh) == "sandbox-app@%"
    fresh.close()
    results = {
        "pymysql": statement_failures(pymysql_connection, pymysql_cursor),
        "mysql.connector pure Python": statement_failures(connector, connector_cursor),
    }
    if extension_child is not None:
        assert extension_child.connection_class == "CMySQLConnection"
        results["mysql.connector C extension"] = extension_child.run_statements()
    for driver, (after_kill, later) in results.items():
        assert after_kill.raised is not None, f"{driver}: the statement after KILL succeeded"
        assert after_kill.errno in DISCONNECT_NUMBERS, f"{driver}: {after_kill}"
        assert after_kill.transient is True, f"{driver}: {after_kill}"
        assert later.raised is not None, f"{driver}: the closed connection was usable"
        assert later.transient is True, f"{driver}: {later}"


def test_sqlalchemy_wrapped_disconnect_is_transient(sandbox: Sandbox) -> None:
    factory = make_factory(sandbox, RetryPolicy.disabled())
    engine = sqlalchemy.create_engine("mysql+pymysql://", creator=factory, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            sandbox.kill_connections()
            with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
                connection.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()

    assert error_number(caught.value) in DISCONNECT_NUMBERS
    assert securemysql.is_transient(caught.value) is True


# --- Full connection table -------------------------------------------------------------


def fill_connection_table(sandbox: Sandbox, limit: int) -> list[Any]:
    """Open token connections until the server returns 1040; return the open ones."""
    holder = make_factory(sandbox, RetryPolicy.disabled())
    open_connections: list[Any] = []
    for _ in range(limit + 1):
        try:
            open_connections.append(holder())
        except ConnectionFailedError as exc:
            assert exc.errno == 1040, exc
            return open_connections
    for connection in open_connections:
        connection.close()
    pytest.fail(f"the server accepted {limit + 1} token connections with max_connections={limit}")


def test_factory_waits_for_free_connection_slot(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    sandbox.kill_connections()
    limit = sandbox.set_max_connections(3)
    assert limit == 10  # MariaDB's minimum
    open_connections = fill_connection_table(sandbox, limit)
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep))
    recorder = record_attempts(factory, monkeypatch)
    outcome: dict[str, Any] = {}

    def connect_in_thread() -> None:
        try:
            outcome["connection"] = factory()
        except BaseException as exc:  # checked by the test below
            outcome["error"] = exc

    thread = threading.Thread(target=connect_in_thread)
    thread.start()
    try:
        assert sleep.first_wait.wait(timeout=HANG_GUARD), "the factory never backed off"
        open_connections.pop().close()
        thread.join(timeout=HANG_GUARD)
    finally:
        for connection in open_connections:
            connection.close()

    assert "error" not in outcome, outcome.get("error")
    assert current_user(outcome["connection"]) == "sandbox-app@%"
    outcome["connection"].close()
    failed = [attempt for attempt in recorder.attempts if not attempt.succeeded]
    assert {attempt.errno for attempt in failed} == {1040}
    assert recorder.attempts[-1].succeeded
    assert len(sleep.waits) == len(failed) >= 1
    records = retry_records(retry_log)
    assert len(records) == len(failed)
    assert all("error 1040" in record.getMessage() for record in records)


# --- Permanent errors -------------------------------------------------------------------


def test_unknown_database_fails_without_retry(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep), database="no_such_database")
    recorder = record_attempts(factory, monkeypatch)

    with pytest.raises(ConnectionFailedError) as caught:
        factory()

    # The token user has rights on one database only, so MariaDB returns 1044 (access
    # denied to the database) rather than 1049, and does not reveal which databases exist.
    assert caught.value.attempts == 1
    assert caught.value.errno == 1044
    assert caught.value.transient is False
    assert error_number(caught.value.__cause__) == 1044  # type: ignore[arg-type]
    assert [attempt.errno for attempt in recorder.attempts] == [1044]
    assert sleep.waits == []
    assert retry_records(retry_log) == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        (TLSMode.UNTRUSTED, CertificateVerificationError),
        (TLSMode.WRONG_HOST, HostnameMismatchError),
    ],
)
def test_unverifiable_certificate_fails_without_retry(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    retry_log: pytest.LogCaptureFixture,
    mode: TLSMode,
    error: type[Exception],
) -> None:
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep))
    recorder = record_attempts(factory, monkeypatch)
    sandbox.restart(tls=mode)

    with pytest.raises(error):
        factory()

    assert len(recorder.attempts) == 1
    assert sleep.waits == []
    assert retry_records(retry_log) == []


def test_access_denied_twice_fails_without_retry(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    # DefaultAzureCredential returns the system identity's token, which the
    # verifier rejects for the user-assigned identity's MySQL user.
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep), user=sandbox.info.user_assigned_user)
    recorder = record_attempts(factory, monkeypatch)
    rejections = len(sandbox.verifier.rejections)

    with pytest.raises(AuthenticationError) as caught:
        factory()

    assert caught.value.errno == 1045
    assert [attempt.errno for attempt in recorder.attempts] == [1045, 1045]
    assert len(sandbox.verifier.rejections) - rejections == 2
    assert sandbox.identity.request_count == 2  # the first token and one forced refresh
    assert sleep.waits == []
    assert retry_records(retry_log) == []


# --- Token errors ------------------------------------------------------------------------


def test_token_endpoint_500_then_connects(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.identity.inject_fault(Fault.HTTP_500, count=2)
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep))  # a new provider: empty cache
    recorder = record_attempts(factory, monkeypatch)

    connection = factory()

    assert current_user(connection) == "sandbox-app@%"
    connection.close()
    assert sandbox.identity.status_counts() == {500: 2, 200: 1}
    assert [attempt.succeeded for attempt in recorder.attempts] == [True]


def test_token_endpoint_outage_is_retried_by_factory(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    # The endpoint answers 500 until the factory first backs off, however often
    # azure-identity's own pipeline retries inside one token request. MSAL 1.39
    # then replays that answer for 5 s without a request, so the factory may back
    # off several times before a request reaches the endpoint again.
    sandbox.identity.inject_fault(Fault.HTTP_500)
    sleep = RecordingSleep(before_first_wait=sandbox.identity.clear_fault)
    factory = make_factory(sandbox, small_policy(sleep))
    recorder = record_attempts(factory, monkeypatch)

    connection = factory()

    assert current_user(connection) == "sandbox-app@%"
    connection.close()
    counts = sandbox.identity.status_counts()
    assert counts[500] >= 1
    assert counts[200] == 1
    records = retry_records(retry_log)
    assert len(records) == len(sleep.waits) >= 1
    for number, record in enumerate(records, start=1):
        assert f"attempt {number} of " in record.getMessage()
        assert "TokenAcquisitionError" in record.getMessage()
        assert record.retry_errno is None  # type: ignore[attr-defined]
    assert [attempt.succeeded for attempt in recorder.attempts] == [True]


class UnavailableCredential:
    """A TokenCredential for a host without any identity: every call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls += 1
        raise CredentialUnavailableError(
            "ManagedIdentityCredential authentication unavailable, no managed identity"
            " endpoint found."
        )


def test_missing_identity_fails_without_retry(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, retry_log: pytest.LogCaptureFixture
) -> None:
    credential = UnavailableCredential()
    sleep = RecordingSleep()
    factory = make_factory(sandbox, small_policy(sleep), credential=credential)
    recorder = record_attempts(factory, monkeypatch)

    with pytest.raises(TokenAcquisitionError) as caught:
        factory()

    assert caught.value.transient is False
    assert credential.calls == 1
    assert recorder.attempts == []
    assert sleep.waits == []
    assert retry_records(retry_log) == []
