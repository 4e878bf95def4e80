"""Unit tests for securemysql.retry: error classification and RetryPolicy.

Driver exceptions are the real classes of PyMySQL and mysql-connector-python. The
TLS failure texts are the ones these drivers produced against MariaDB 10.11 with
PyMySQL 1.2.4 and mysql-connector-python 26.10.0. RetryPolicy runs on a fake clock
and a fake sleep, so no test waits.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import math
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from typing import Callable, Union

import mysql.connector.errors as mc_errors
import pymysql
import pytest
import sqlalchemy.exc
from mysql.connector import errorcode as mc_errorcode
from pymysql.constants import CR as pymysql_cr

from securemysql import errors
from securemysql.retry import (
    ERROR_TABLE,
    SQLSTATE_TABLE,
    ErrorRule,
    Outcome,
    RetryPolicy,
    classify,
    error_number,
    is_transient,
    sqlstate,
)

# --- Building driver exceptions ------------------------------------------------------

DriverErrorFactory = Callable[[int, str], BaseException]

DRIVER_ERROR_FACTORIES: dict[str, DriverErrorFactory] = {
    "pymysql.OperationalError": lambda number, text: pymysql.err.OperationalError(number, text),
    "pymysql.InternalError": lambda number, text: pymysql.err.InternalError(number, text),
    "pymysql.ProgrammingError": lambda number, text: pymysql.err.ProgrammingError(number, text),
    "pymysql.InterfaceError": lambda number, text: pymysql.err.InterfaceError(number, text),
    "mysql.connector.OperationalError": lambda number, text: mc_errors.OperationalError(
        msg=text, errno=number
    ),
    "mysql.connector.InterfaceError": lambda number, text: mc_errors.InterfaceError(
        msg=text, errno=number
    ),
    "mysql.connector.DatabaseError": lambda number, text: mc_errors.DatabaseError(
        msg=text, errno=number, sqlstate="HY000"
    ),
    # The SQLSTATE 28000 alone would mean AUTHENTICATION, but a listed number decides first.
    "mysql.connector.ProgrammingError": lambda number, text: mc_errors.ProgrammingError(
        msg=text, errno=number, sqlstate="28000"
    ),
    "mysql.connector.get_mysql_exception": lambda number, text: mc_errors.get_mysql_exception(
        number, text, "HY000"
    ),
}

RULE_CASES = [
    pytest.param(rule, factory, id=f"{rule.errno}-{factory_name}")
    for rule in ERROR_TABLE.values()
    for factory_name, factory in DRIVER_ERROR_FACTORIES.items()
]

# Error numbers defined by MariaDB only, so absent from mysql.connector.errorcode.
MARIADB_ONLY_NUMBERS = {1927}

# The message MySQL 8.0 sends with 4031, and MariaDB 10.11's message for its own 4031.
MYSQL_IDLE_DISCONNECT = (
    "The client was disconnected by the server because of inactivity. See wait_timeout"
    " and interactive_timeout for configuring this behavior."
)
MARIADB_MISSING_TRIGGER = (
    "Referenced trigger 'audit_insert' for the given action time and event type does not exist"
)


def message_for(rule: ErrorRule) -> str:
    """Return a message that the rule applies to: the server's text where the rule needs it."""
    if rule.errno == 4031:
        return MYSQL_IDLE_DISCONNECT
    return f"test message for {rule.symbol}"


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    """Return ``outer`` with ``inner`` as its __cause__, as ``raise outer from inner`` does."""
    outer.__cause__ = inner
    return outer


# --- ERROR_TABLE --------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "factory"), RULE_CASES)
def test_classify_every_table_entry_per_driver(
    rule: ErrorRule, factory: DriverErrorFactory
) -> None:
    exc = factory(rule.errno, message_for(rule))

    assert rule.applies_to(message_for(rule))
    assert classify(exc) is rule.outcome
    assert error_number(exc) == rule.errno
    assert is_transient(exc) is (rule.outcome is Outcome.TRANSIENT)


@pytest.mark.parametrize("rule", ERROR_TABLE.values(), ids=lambda rule: str(rule.errno))
def test_table_symbols_match_installed_drivers(rule: ErrorRule) -> None:
    assert ERROR_TABLE[rule.errno] is rule
    assert rule.meaning
    assert "MySQL" in rule.source or "MariaDB" in rule.source

    if rule.errno in MARIADB_ONLY_NUMBERS:
        assert "MariaDB" in rule.source
        assert not hasattr(mc_errorcode, rule.symbol)
        return

    assert getattr(mc_errorcode, rule.symbol) == rule.errno
    if rule.symbol.startswith("CR_"):
        assert getattr(pymysql_cr, rule.symbol) == rule.errno
        assert "client" in rule.source


@functools.lru_cache(maxsize=1)
def mariadb_symbols() -> dict[int, str]:
    """Return the symbol that MariaDB's perror prints for each server number in ERROR_TABLE."""
    perror = shutil.which("perror")
    if perror is None:
        pytest.skip("MariaDB's perror is not installed")
    numbers = [str(number) for number in ERROR_TABLE if not 2000 <= number < 3000]
    completed = subprocess.run(
        [perror, *numbers], capture_output=True, text=True, check=False, timeout=60
    )
    output = completed.stdout + completed.stderr
    if "MariaDB" not in output:
        pytest.skip("perror is not MariaDB's")
    found = re.findall(r"MariaDB error code (\d+) \((\w+)\)", output)
    return {int(number): symbol for number, symbol in found}


@pytest.mark.parametrize(
    "rule",
    [rule for rule in ERROR_TABLE.values() if not 2000 <= rule.errno < 3000],
    ids=lambda rule: str(rule.errno),
)
def test_table_sources_match_mariadb(rule: ErrorRule) -> None:
    mariadb_symbol = mariadb_symbols().get(rule.errno)

    if "MariaDB" in rule.source:
        assert mariadb_symbol == rule.symbol
    else:
        assert mariadb_symbol != rule.symbol


@pytest.mark.parametrize("factory", DRIVER_ERROR_FACTORIES.values(), ids=DRIVER_ERROR_FACTORIES)
def test_4031_idle_disconnect_is_transient(factory: DriverErrorFactory) -> None:
    exc = factory(4031, MYSQL_IDLE_DISCONNECT)

    assert classify(exc) is Outcome.TRANSIENT
    assert error_number(exc) == 4031


@pytest.mark.parametrize("factory", DRIVER_ERROR_FACTORIES.values(), ids=DRIVER_ERROR_FACTORIES)
def test_4031_mariadb_trigger_error_is_permanent(factory: DriverErrorFactory) -> None:
    exc = factory(4031, MARIADB_MISSING_TRIGGER)

    assert classify(exc) is Outcome.PERMANENT
    assert is_transient(exc) is False
    assert error_number(exc) == 4031


def test_4031_without_text_defers_to_wrapped_error() -> None:
    exc = chained(
        mc_errors.DatabaseError(msg=MARIADB_MISSING_TRIGGER, errno=4031),
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    )

    assert classify(exc) is Outcome.TRANSIENT


def test_tables_are_immutable() -> None:
    rule = ERROR_TABLE[2003]

    with pytest.raises(TypeError):
        ERROR_TABLE[9999] = rule  # type: ignore[index]
    with pytest.raises(TypeError):
        SQLSTATE_TABLE["08S01"] = Outcome.PERMANENT  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.outcome = Outcome.PERMANENT  # type: ignore[misc]


@pytest.mark.parametrize(
    "number",
    [
        1205,  # ER_LOCK_WAIT_TIMEOUT: a statement error, not a connection failure
        1213,  # ER_LOCK_DEADLOCK: the caller must re-run the transaction
        1064,  # ER_PARSE_ERROR
        1153,  # ER_NET_PACKET_TOO_LARGE, SQLSTATE 08S01 but not transient
        3024,  # ER_QUERY_TIMEOUT
    ],
)
def test_unlisted_numbers_are_permanent(number: int) -> None:
    assert number not in ERROR_TABLE

    pymysql_error = pymysql.err.OperationalError(number, "test message", sqlstate="08S01")
    mc_error = mc_errors.DatabaseError(msg="test message", errno=number, sqlstate="08S01")

    assert classify(pymysql_error) is Outcome.PERMANENT
    assert classify(mc_error) is Outcome.PERMANENT


# --- TLS failures under connection error numbers ---------------------------------------

PYMYSQL_WRONG_CA = (
    "Can't connect to MySQL server on '127.0.0.1' ([SSL: CERTIFICATE_VERIFY_FAILED]"
    " certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006))"
)
PYMYSQL_WRONG_HOST = (
    "Can't connect to MySQL server on 'localhost' ([SSL: CERTIFICATE_VERIFY_FAILED]"
    " certificate verify failed: Hostname mismatch, certificate is not valid for"
    " 'localhost'. (_ssl.c:1006))"
)
MC_PURE_WRONG_IP = (
    "Lost connection to MySQL server at '127.0.0.1:33991', system error: Errno 1:"
    " [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch,"
    " certificate is not valid for '127.0.0.1'. (_ssl.c:1006)"
)
MC_CEXT_VERIFY_FAILED = (
    "SSL connection error: error:0A000086:SSL routines::certificate verify failed"
)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(pymysql.err.OperationalError(2003, PYMYSQL_WRONG_CA), id="pymysql-2003-ca"),
        pytest.param(
            pymysql.err.OperationalError(2003, PYMYSQL_WRONG_HOST), id="pymysql-2003-host"
        ),
        pytest.param(
            mc_errors.InterfaceError(msg=MC_PURE_WRONG_IP, errno=2055), id="mc-pure-2055-ip"
        ),
        pytest.param(
            mc_errors.OperationalError(msg=MC_PURE_WRONG_IP, errno=2055), id="mc-pure-2055-op"
        ),
        pytest.param(
            mc_errors.InterfaceError(msg=MC_CEXT_VERIFY_FAILED, errno=2026, sqlstate="HY000"),
            id="mc-cext-2026",
        ),
        pytest.param(
            pymysql.err.OperationalError(
                2013, "Lost connection ([SSL: WRONG_VERSION_NUMBER] wrong version number)"
            ),
            id="pymysql-2013-version",
        ),
    ],
)
def test_tls_failure_texts_are_permanent(exc: BaseException) -> None:
    assert classify(exc) is Outcome.PERMANENT
    assert not is_transient(exc)


def test_tls_failure_in_chain_is_permanent_without_text() -> None:
    # PyMySQL keeps the OSError it wrapped as original_exception and __context__.
    verify_error = ssl.SSLCertVerificationError(1, "verification failed")
    pymysql_error = pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
    pymysql_error.original_exception = verify_error  # type: ignore[attr-defined]

    mc_error = chained(mc_errors.InterfaceError(msg="Lost connection", errno=2055), verify_error)

    assert classify(pymysql_error) is Outcome.PERMANENT
    assert classify(mc_error) is Outcome.PERMANENT


@pytest.mark.parametrize(
    "text",
    [
        "SSL connection error: error:00000000:lib(0)::reason(0)",
        "SSL connection error: error:00000000:lib(0):func(0):reason(0)",
        "SSL connection error: error:0A000126:SSL routines::unexpected eof while reading",
        "SSL connection error: Connection reset by peer",
    ],
)
def test_ssl_connection_error_after_reset_is_transient(text: str) -> None:
    exc = mc_errors.InterfaceError(msg=text, errno=2026, sqlstate="HY000")

    assert classify(exc) is Outcome.TRANSIENT


def test_ssl_connection_error_with_reset_cause_is_transient() -> None:
    exc = chained(
        pymysql.err.OperationalError(2026, "SSL handshake failed"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    )

    assert classify(exc) is Outcome.TRANSIENT


@pytest.mark.parametrize(
    "text",
    [
        "SSL is required but the server doesn't support it",
        "SSL connection error: SSL_CTX_set_default_verify_paths failed",
        "SSL connection error: SSL certificate validation failure",
    ],
)
def test_ssl_connection_error_without_reset_is_permanent(text: str) -> None:
    assert classify(pymysql.err.OperationalError(2026, text)) is Outcome.PERMANENT
    assert classify(mc_errors.InterfaceError(msg=text, errno=2026)) is Outcome.PERMANENT


def test_tls_eof_during_handshake_is_transient() -> None:
    eof = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation")
    pymysql_error = pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on '127.0.0.1' ([SSL: UNEXPECTED_EOF_WHILE_READING])"
    )
    pymysql_error.original_exception = eof  # type: ignore[attr-defined]

    assert classify(pymysql_error) is Outcome.TRANSIENT
    assert classify(eof) is Outcome.TRANSIENT


# --- securemysql's own errors ---------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        errors.TLSError("TLS failed"),
        errors.TLSNotOfferedError("no TLS"),
        errors.CertificateVerificationError("bad chain", ca_source="bundle.pem"),
        errors.HostnameMismatchError("mismatch", hostname="db.example.test"),
        errors.TLSVersionError("TLS 1.1 only"),
        errors.InsecureConfigurationError("ssl_disabled=True"),
        errors.ConfigurationError("bad value"),
        errors.InvalidTokenError("invalid"),
        errors.MalformedTokenError("not a JWT"),
        errors.TokenAudienceError("wrong audience"),
        errors.TokenExpiredError("expired"),
        errors.AuthenticationError("rejected", user="app", errno=1045),
        errors.DriverNotAvailableError("no driver"),
        errors.TokenAcquisitionError("no token", credential="Fake", scope="s", transient=False),
        errors.ConnectionFailedError("failed", attempts=3, elapsed=1.0, transient=False),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_securemysql_errors_are_permanent(exc: errors.SecureMySQLError) -> None:
    assert classify(exc) is Outcome.PERMANENT


@pytest.mark.parametrize(
    "exc",
    [
        errors.TokenAcquisitionError("time-out", credential="Fake", scope="s", transient=True),
        errors.ConnectionFailedError("failed", attempts=3, elapsed=1.0, errno=2003, transient=True),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_securemysql_transient_attribute_decides(exc: errors.SecureMySQLError) -> None:
    assert classify(exc) is Outcome.TRANSIENT


def test_securemysql_type_wins_over_chain() -> None:
    # AuthenticationError is raised after the forced token refresh failed as well.
    authentication = chained(
        errors.AuthenticationError("rejected", user="app", errno=1045),
        pymysql.err.OperationalError(1045, "Access denied"),
    )
    token = chained(
        errors.TokenAcquisitionError("endpoint down", credential="Fake", scope="s", transient=True),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
    )

    assert classify(authentication) is Outcome.PERMANENT
    assert classify(token) is Outcome.TRANSIENT


# --- Authentication and SQLSTATE ----------------------------------------------------


def test_access_denied_is_authentication() -> None:
    pymysql_error = pymysql.err.OperationalError(
        1045, "Access denied for user 'app'@'127.0.0.1' (using password: YES)", sqlstate="28000"
    )
    mc_error = mc_errors.get_mysql_exception(
        1045, "Access denied for user 'app'@'127.0.0.1' (using password: YES)", "28000"
    )

    assert isinstance(mc_error, mc_errors.ProgrammingError)
    assert classify(pymysql_error) is Outcome.AUTHENTICATION
    assert classify(mc_error) is Outcome.AUTHENTICATION
    assert sqlstate(pymysql_error) == "28000"
    assert sqlstate(mc_error) == "28000"


@pytest.mark.parametrize(("state", "outcome"), SQLSTATE_TABLE.items())
def test_sqlstate_decides_without_number(state: str, outcome: Outcome) -> None:
    exc = mc_errors.Error(msg="test message", sqlstate=state)

    assert error_number(exc) is None
    assert sqlstate(exc) == state
    assert classify(exc) is outcome


def test_unlisted_sqlstate_without_number_is_permanent() -> None:
    exc = mc_errors.Error(msg="test message", sqlstate="42000")

    assert classify(exc) is Outcome.PERMANENT


# --- Plain OSErrors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        ConnectionAbortedError(errno.ECONNABORTED, "Connection aborted"),
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        TimeoutError("timed out"),
        socket.timeout("timed out"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
    ],
    ids=repr,
)
def test_network_oserrors_are_transient(exc: OSError) -> None:
    assert classify(exc) is Outcome.TRANSIENT
    assert error_number(exc) is None


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError("no errno"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version"),
    ],
    ids=repr,
)
def test_other_oserrors_are_permanent(exc: OSError) -> None:
    assert classify(exc) is Outcome.PERMANENT


def test_missing_ca_file_under_driver_error_is_permanent() -> None:
    # mysql-connector-python's pure-Python mode, measured: errno -1 and the OSError as cause.
    exc = chained(
        mc_errors.InterfaceError("Invalid CA Certificate: [Errno 2] No such file or directory"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
    )

    assert error_number(exc) is None
    assert classify(exc) is Outcome.PERMANENT


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        RuntimeError("bug"),
        KeyboardInterrupt(),
        pymysql.err.InterfaceError(0, "something else"),
        pymysql.err.OperationalError(0, ""),
        mc_errors.InterfaceError("Connection refused by policy"),
    ],
    ids=repr,
)
def test_unknown_errors_are_permanent(exc: BaseException) -> None:
    assert classify(exc) is Outcome.PERMANENT


# --- Closed connections reported without an error number ------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        # Measured against MariaDB 10.11 after KILL CONNECTION, for the next cursor()
        # (mysql-connector-python, both modes) and the second statement (PyMySQL).
        mc_errors.OperationalError("MySQL Connection not available."),
        mc_errors.InterfaceError("Connection to MySQL is not available"),
        pymysql.err.InterfaceError(0, ""),
        chained(mc_errors.OperationalError("MySQL Connection not available"), AttributeError()),
    ],
    ids=repr,
)
def test_closed_connection_is_transient(exc: BaseException) -> None:
    assert error_number(exc) is None
    assert classify(exc) is Outcome.TRANSIENT
    assert is_transient(sqlalchemy.exc.OperationalError("SELECT 1", None, exc))


def test_closed_connection_text_yields_to_wrapped_error() -> None:
    exc = chained(
        mc_errors.OperationalError("MySQL Connection not available"),
        pymysql.err.OperationalError(1049, "Unknown database 'nope'"),
    )

    assert classify(exc) is Outcome.PERMANENT


# --- Wrapped errors -----------------------------------------------------------------


def test_error_wrapped_by_cause_is_classified() -> None:
    exc = chained(RuntimeError("connect failed"), pymysql.err.OperationalError(2003, "refused"))

    assert classify(exc) is Outcome.TRANSIENT
    assert error_number(exc) == 2003


def test_error_wrapped_by_context_is_classified() -> None:
    try:
        try:
            raise mc_errors.OperationalError(msg="Lost connection", errno=2013)
        except mc_errors.Error:
            # The implicit __context__ is what this test is about.
            raise RuntimeError("while connecting")  # noqa: B904
    except RuntimeError as exc:
        caught: BaseException = exc

    assert isinstance(caught.__context__, mc_errors.OperationalError)
    assert classify(caught) is Outcome.TRANSIENT
    assert error_number(caught) == 2013


def test_suppressed_context_is_not_followed() -> None:
    try:
        try:
            raise mc_errors.OperationalError(msg="Lost connection", errno=2013)
        except mc_errors.Error:
            raise RuntimeError("unrelated") from None
    except RuntimeError as exc:
        caught: BaseException = exc

    assert classify(caught) is Outcome.PERMANENT
    assert error_number(caught) is None


def test_sqlalchemy_orig_is_classified() -> None:
    wrapped = sqlalchemy.exc.OperationalError(
        "SELECT 1", None, pymysql.err.OperationalError(2006, "MySQL server has gone away")
    )
    tls_failure = sqlalchemy.exc.OperationalError(
        None,
        None,
        chained(
            mc_errors.InterfaceError(msg="Lost connection", errno=2055),
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ),
    )

    assert classify(wrapped) is Outcome.TRANSIENT
    assert error_number(wrapped) == 2006
    assert classify(tls_failure) is Outcome.PERMANENT


def test_connector_read_timeout_chain_is_transient() -> None:
    # mysql-connector-python's pure-Python mode, measured against a server that never responds.
    read_timeout = chained(mc_errors.ReadTimeoutError(errno=3024), TimeoutError("timed out"))
    exc = chained(mc_errors.ConnectionTimeoutError(errno=3024), read_timeout)

    assert error_number(exc) == 3024
    assert classify(exc) is Outcome.TRANSIENT


def wrap_in_runtime_errors(inner: BaseException, levels: int) -> BaseException:
    exc = inner
    for level in range(levels):
        exc = chained(RuntimeError(f"wrapper {level}"), exc)
    return exc


def test_chain_depth_is_limited() -> None:
    driver_error = pymysql.err.OperationalError(2013, "Lost connection")

    assert classify(wrap_in_runtime_errors(driver_error, 3)) is Outcome.TRANSIENT
    assert classify(wrap_in_runtime_errors(driver_error, 4)) is Outcome.PERMANENT
    assert error_number(wrap_in_runtime_errors(driver_error, 4)) is None


def test_error_number_ignores_os_and_placeholder_numbers() -> None:
    assert error_number(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None
    assert error_number(mc_errors.InterfaceError("no number")) is None
    assert error_number(pymysql.err.OperationalError("no number")) is None
    assert error_number(ValueError(2003)) is None
    assert error_number(errors.AuthenticationError("x", user="app", errno=1045)) == 1045


def test_import_does_not_load_ssl() -> None:
    # Importing ssl first breaks the mysql-connector-python 26.x C extension on Debian 12.
    program = "import sys, securemysql.retry; sys.exit('ssl' in sys.modules)"

    completed = subprocess.run([sys.executable, "-c", program], check=False)

    assert completed.returncode == 0


# --- RetryPolicy: fakes -------------------------------------------------------------

START = 1000.0


class FakeTime:
    """Fake clock and sleep: time advances only in sleep() and in scripted attempts."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.sleep_ends: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.sleep_ends.append(self.now - START)


Failure = Union[BaseException, Callable[[], BaseException]]


class ScriptedAttempts:
    """Attempt callable that raises the scripted errors in order, then returns a result.

    Each call advances the fake clock by ``duration`` seconds. When ``repeat_last``
    is True, the last error is raised forever.
    """

    def __init__(
        self,
        fake_time: FakeTime,
        failures: Sequence[Failure],
        *,
        duration: float = 0.0,
        repeat_last: bool = False,
    ) -> None:
        self.fake_time = fake_time
        self.failures = list(failures)
        self.duration = duration
        self.repeat_last = repeat_last
        self.calls = 0
        self.start_times: list[float] = []
        self.raised: list[BaseException] = []

    def __call__(self) -> str:
        self.start_times.append(self.fake_time.now - START)
        self.calls += 1
        self.fake_time.now += self.duration

        index = self.calls - 1
        if index >= len(self.failures) and self.repeat_last:
            index = len(self.failures) - 1
        if index < len(self.failures):
            failure = self.failures[index]
            exc = failure() if callable(failure) else failure
            self.raised.append(exc)
            raise exc
        return "connection"


def connection_refused() -> BaseException:
    return pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
    )


def run(
    policy: RetryPolicy, attempts: ScriptedAttempts, fake_time: FakeTime, description: str = "op"
) -> str:
    return policy.call(
        attempts, description=description, sleep=fake_time.sleep, clock=fake_time.clock
    )


def always_high(low: float, high: float) -> float:
    return high


def always_low(low: float, high: float) -> float:
    return low


# --- RetryPolicy: retrying ----------------------------------------------------------


def test_policy_retries_transient_then_succeeds() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused, connection_refused])

    result = run(RetryPolicy(), attempts, fake_time)

    assert result == "connection"
    assert attempts.calls == 3
    assert len(fake_time.sleeps) == 2


def test_policy_stops_at_max_attempts() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy(max_attempts=4, deadline=10_000.0)

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(policy, attempts, fake_time, description="connect to db.example.test:3306")

    assert attempts.calls == 4
    assert len(fake_time.sleeps) == 3
    assert caught.value.attempts == 4
    assert caught.value.transient is True
    assert caught.value.errno == 2003
    assert caught.value.__cause__ is attempts.raised[-1]
    assert caught.value.elapsed == pytest.approx(sum(fake_time.sleeps))
    assert "connect to db.example.test:3306" in str(caught.value)
    assert "max_attempts=4" in str(caught.value)


def test_policy_stops_at_deadline_without_sleeping_past_it() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], duration=0.5, repeat_last=True)
    policy = RetryPolicy(max_attempts=1000, deadline=30.0, initial_wait=0.5, max_wait=4.0)

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(policy, attempts, fake_time)

    assert attempts.calls > 5
    assert all(end <= policy.deadline for end in fake_time.sleep_ends)
    assert all(start <= policy.deadline for start in attempts.start_times)
    assert fake_time.now - START <= policy.deadline + attempts.duration
    assert caught.value.attempts == attempts.calls
    assert caught.value.elapsed == pytest.approx(fake_time.now - START)


def test_policy_shortens_last_wait_to_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", always_high)
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy(max_attempts=100, deadline=10.0, initial_wait=4.0, max_wait=8.0)

    with pytest.raises(errors.ConnectionFailedError):
        run(policy, attempts, fake_time)

    # The second wait would be 8 s but only 6 s remain; the third attempt starts at 10 s.
    assert fake_time.sleeps == pytest.approx([4.0, 6.0])
    assert attempts.start_times == pytest.approx([0.0, 4.0, 10.0])


def test_policy_waits_stay_within_jitter_window() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy(max_attempts=60, deadline=100_000.0, initial_wait=0.5, max_wait=8.0)

    with pytest.raises(errors.ConnectionFailedError):
        run(policy, attempts, fake_time)

    assert len(fake_time.sleeps) == 59
    for index, wait in enumerate(fake_time.sleeps):
        window = min(0.5 * 2**index, 8.0)
        assert 0.0 <= wait <= window, f"wait {wait} after attempt {index + 1} exceeds {window}"
    assert len(set(fake_time.sleeps)) > 1


def test_policy_window_doubles_up_to_max_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", always_high)
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy(max_attempts=8, deadline=10_000.0, initial_wait=0.5, max_wait=8.0)

    with pytest.raises(errors.ConnectionFailedError):
        run(policy, attempts, fake_time)

    assert fake_time.sleeps == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0])


def test_policy_window_starts_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", always_low)
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy(max_attempts=5, deadline=10_000.0)

    with pytest.raises(errors.ConnectionFailedError):
        run(policy, attempts, fake_time)

    assert fake_time.sleeps == [0.0, 0.0, 0.0, 0.0]


def test_default_policy_outlasts_two_minute_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", random.Random(20240611).uniform)
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)
    policy = RetryPolicy()

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(policy, attempts, fake_time)

    assert caught.value.elapsed >= 120.0
    assert caught.value.elapsed <= policy.deadline
    assert attempts.calls < policy.max_attempts
    assert max(fake_time.sleeps) <= policy.max_wait


# --- RetryPolicy: errors that are not retried ---------------------------------------


def test_policy_permanent_driver_error_is_wrapped() -> None:
    fake_time = FakeTime()
    unknown_database = pymysql.err.OperationalError(1049, "Unknown database 'nope'")
    attempts = ScriptedAttempts(fake_time, [unknown_database])

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(RetryPolicy(), attempts, fake_time)

    assert attempts.calls == 1
    assert fake_time.sleeps == []
    assert caught.value.attempts == 1
    assert caught.value.transient is False
    assert caught.value.errno == 1049
    assert caught.value.__cause__ is unknown_database


def test_policy_authentication_error_is_not_retried() -> None:
    fake_time = FakeTime()
    access_denied = mc_errors.ProgrammingError(msg="Access denied", errno=1045, sqlstate="28000")
    attempts = ScriptedAttempts(fake_time, [access_denied])

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(RetryPolicy(), attempts, fake_time)

    assert attempts.calls == 1
    assert fake_time.sleeps == []
    assert caught.value.errno == 1045
    assert "authentication" in str(caught.value)


@pytest.mark.parametrize(
    "exc",
    [
        errors.HostnameMismatchError("mismatch", hostname="db.example.test"),
        errors.InsecureConfigurationError("ssl_disabled=True"),
        errors.AuthenticationError("rejected", user="app", errno=1045),
        errors.TokenAcquisitionError("denied", credential="Fake", scope="s", transient=False),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_policy_reraises_securemysql_errors_unchanged(exc: errors.SecureMySQLError) -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [exc])

    with pytest.raises(type(exc)) as caught:
        run(RetryPolicy(), attempts, fake_time)

    assert caught.value is exc
    assert attempts.calls == 1
    assert fake_time.sleeps == []


def test_policy_permanent_after_transient_stops() -> None:
    fake_time = FakeTime()
    unknown_database = pymysql.err.OperationalError(1049, "Unknown database 'nope'")
    attempts = ScriptedAttempts(fake_time, [connection_refused, unknown_database])

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(RetryPolicy(), attempts, fake_time)

    assert attempts.calls == 2
    assert len(fake_time.sleeps) == 1
    assert caught.value.attempts == 2
    assert caught.value.errno == 1049
    assert caught.value.transient is False


def test_policy_transient_securemysql_error_is_retried() -> None:
    fake_time = FakeTime()

    def token_timeout() -> BaseException:
        return errors.TokenAcquisitionError(
            "time-out", credential="Fake", scope="s", transient=True
        )

    attempts = ScriptedAttempts(fake_time, [token_timeout], repeat_last=True)

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(RetryPolicy(max_attempts=3), attempts, fake_time)

    assert attempts.calls == 3
    assert caught.value.transient is True
    assert isinstance(caught.value.__cause__, errors.TokenAcquisitionError)


def test_policy_keyboard_interrupt_propagates() -> None:
    fake_time = FakeTime()
    interrupt = KeyboardInterrupt()
    attempts = ScriptedAttempts(fake_time, [interrupt])

    with pytest.raises(KeyboardInterrupt) as caught:
        run(RetryPolicy(), attempts, fake_time)

    assert caught.value is interrupt
    assert attempts.calls == 1


@pytest.mark.parametrize(
    "policy",
    [RetryPolicy.disabled(), RetryPolicy(enabled=False)],
    ids=["disabled()", "enabled=False"],
)
def test_disabled_policy_makes_one_attempt(policy: RetryPolicy) -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused], repeat_last=True)

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(policy, attempts, fake_time)

    assert attempts.calls == 1
    assert fake_time.sleeps == []
    assert caught.value.attempts == 1
    assert caught.value.transient is True
    assert "retries are disabled" in str(caught.value)


def test_disabled_policy_returns_result() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [])

    assert run(RetryPolicy.disabled(), attempts, fake_time) == "connection"
    assert attempts.calls == 1


# --- RetryPolicy: logging -----------------------------------------------------------


def test_policy_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="securemysql.retry")
    fake_time = FakeTime()
    lost = mc_errors.OperationalError(msg="Lost connection to MySQL server", errno=2013)
    attempts = ScriptedAttempts(fake_time, [connection_refused, lost])

    run(RetryPolicy(), attempts, fake_time, description="connect to db.example.test:3306")

    records = [record for record in caplog.records if record.name == "securemysql.retry"]
    assert len(records) == 2
    for number, (record, expected_errno, wait) in enumerate(
        zip(records, [2003, 2013], fake_time.sleeps), start=1
    ):
        message = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "connect to db.example.test:3306" in message
        assert f"attempt {number} of 40" in message
        assert f"error {expected_errno}" in message
        assert f"retrying in {wait:.2f} s" in message
        assert record.retry_attempt == number  # type: ignore[attr-defined]
        assert record.retry_errno == expected_errno  # type: ignore[attr-defined]
        assert record.retry_wait == wait  # type: ignore[attr-defined]


def test_policy_log_truncates_error_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="securemysql.retry")
    fake_time = FakeTime()
    long_text = "Lost connection\n    " + "x" * 1000
    attempts = ScriptedAttempts(fake_time, [pymysql.err.OperationalError(2013, long_text)])

    run(RetryPolicy(), attempts, fake_time)

    (record,) = [record for record in caplog.records if record.name == "securemysql.retry"]
    message = record.getMessage()
    assert "x" * 200 not in message
    assert "x" * 100 in message
    assert "...)" in message
    assert "\n" not in message


def test_policy_redacts_token_in_error_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="securemysql.retry")
    fake_time = FakeTime()
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJl"
    leaky = pymysql.err.OperationalError(2013, f"Lost connection while sending {token}")
    attempts = ScriptedAttempts(fake_time, [leaky], repeat_last=True)

    with pytest.raises(errors.ConnectionFailedError) as caught:
        run(RetryPolicy(max_attempts=2), attempts, fake_time)

    (record,) = [record for record in caplog.records if record.name == "securemysql.retry"]
    assert token not in record.getMessage()
    assert "[REDACTED]" in record.getMessage()
    assert token not in str(caught.value)
    assert "[REDACTED]" in str(caught.value)


def test_policy_without_retry_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="securemysql.retry")
    fake_time = FakeTime()
    unknown_database = pymysql.err.OperationalError(1049, "Unknown database 'nope'")

    run(RetryPolicy(), ScriptedAttempts(fake_time, []), fake_time)
    with pytest.raises(errors.ConnectionFailedError):
        run(RetryPolicy(), ScriptedAttempts(fake_time, [unknown_database]), fake_time)

    assert [record for record in caplog.records if record.name == "securemysql.retry"] == []


# --- RetryPolicy: validation --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": -1.0}, "deadline"),
        ({"deadline": math.nan}, "deadline"),
        ({"deadline": math.inf}, "deadline"),
        ({"deadline": "150"}, "deadline"),
        ({"deadline": True}, "deadline"),
        ({"initial_wait": 0.0}, "initial_wait"),
        ({"initial_wait": -0.5}, "initial_wait"),
        ({"max_wait": 0.0}, "max_wait"),
        ({"initial_wait": 20.0, "max_wait": 15.0}, "initial_wait"),
        ({"enabled": "yes"}, "enabled"),
    ],
    ids=repr,
)
def test_policy_rejects_invalid_values(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        RetryPolicy(**arguments)  # type: ignore[arg-type]

    assert f"RetryPolicy.{field}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_policy_is_immutable_with_honest_repr() -> None:
    policy = RetryPolicy(max_attempts=7, deadline=90.0, initial_wait=2.0, max_wait=10.0)

    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.deadline = 1.0  # type: ignore[misc]
    assert repr(policy) == (
        "RetryPolicy(max_attempts=7, deadline=90.0, initial_wait=2.0, max_wait=10.0, enabled=True)"
    )
    assert repr(RetryPolicy.disabled()) == (
        "RetryPolicy(max_attempts=1, deadline=150.0, initial_wait=2.0, max_wait=15.0,"
        " enabled=False)"
    )


def test_policy_sleep_field_is_used() -> None:
    fake_time = FakeTime()
    attempts = ScriptedAttempts(fake_time, [connection_refused, connection_refused])
    policy = RetryPolicy(sleep=fake_time.sleep)

    result = policy.call(attempts, description="op", clock=fake_time.clock)

    assert result == "connection"
    assert len(fake_time.sleeps) == 2
    assert policy == RetryPolicy()
    assert "sleep" not in repr(policy)


def test_policy_rejects_sleep_that_is_not_callable() -> None:
    with pytest.raises(errors.ConfigurationError, match=r"RetryPolicy\.sleep"):
        RetryPolicy(sleep=1.0)  # type: ignore[arg-type]


def test_policy_accepts_integer_seconds() -> None:
    policy = RetryPolicy(max_attempts=1, deadline=60, initial_wait=1, max_wait=1)

    assert policy.deadline == 60
