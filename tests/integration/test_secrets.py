"""No access token in any output: log records at DEBUG, reprs, exception texts, stdout and stderr.

For every driver mode, a full connect, failed connects (token rejected, TLS
not verifiable) and a forced token refresh run with every logger involved at
DEBUG and a capturing handler on the root logger. Every record, formatted with
its traceback, every ``repr`` and ``str`` of the SDK objects and every
exception text (chained exceptions and tracebacks included) is then searched
for the tokens the sandbox issued, their signatures, any JWT-shaped text and
the identity endpoint's secret header value.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

import securemysql
from securemysql.errors import AuthenticationError, HostnameMismatchError
from securemysql.sandbox import Sandbox, TLSMode
from tests.unit.test_drivers import DRIVER_MODES, DriverMode, mode_param

pytestmark = pytest.mark.integration

MODES = [mode_param(mode, id=mode.id) for mode in DRIVER_MODES]

DEBUG_LOGGERS = ("", "securemysql", "pymysql", "mysql.connector", "azure", "urllib3")


class CapturingHandler(logging.Handler):
    """Keeps every record and its fully formatted text, traceback and stack included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.texts.append(self.format(record))

    def names(self) -> set[str]:
        return {record.name for record in self.records}


@pytest.fixture
def debug_logs() -> Iterator[CapturingHandler]:
    handler = CapturingHandler()
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)

    yield handler

    logging.getLogger().removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _factory(sandbox: Sandbox, mode: DriverMode, **overrides: Any) -> securemysql.ConnectionFactory:
    info = sandbox.info
    arguments: dict[str, Any] = {
        "port": info.port,
        "database": info.database,
        "ssl_ca": info.ssl_ca,
        "driver": mode.driver,
        "use_pure": mode.use_pure,
        "retry": securemysql.RetryPolicy.disabled(),
    }
    user = overrides.pop("user", info.user)
    arguments.update(overrides)
    return securemysql.ConnectionFactory(info.host, user, **arguments)


def _current_token(factory: securemysql.ConnectionFactory) -> str:
    return factory.tokens.get_token().token  # served from the cache, no new fetch


def _secret_forms(tokens: list[str], sandbox: Sandbox) -> list[str]:
    forms = ["eyJ", sandbox.identity.secret]  # any JWT, and the X-IDENTITY-HEADER value
    for token in tokens:
        forms += [token, token.split(".")[2], token.encode().hex()[:64]]
    return forms


def _exception_text(exc: BaseException) -> str:
    """Return str(), repr() and the whole traceback of ``exc``, chained exceptions included."""
    texts = [
        str(exc),
        repr(exc),
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    ]
    link = exc.__cause__ or exc.__context__
    while link is not None:
        texts += [str(link), repr(link)]
        link = link.__cause__ or link.__context__
    return "\n".join(texts)


def _object_texts(factory: securemysql.ConnectionFactory, *others: object) -> str:
    objects = [
        factory,
        factory.tokens,
        factory.tokens.get_token(),
        factory.driver,
        factory.tls,
        factory._params,
        *others,
    ]
    return "\n".join(text for item in objects for text in (repr(item), str(item)))


def _leaks(text: str, forms: list[str]) -> list[str]:
    return [form[:12] + "..." for form in forms if form in text]


def _assert_no_leaks(
    handler: CapturingHandler,
    capfd: pytest.CaptureFixture[str],
    forms: list[str],
    *texts: str,
) -> None:
    for record_text in handler.texts:
        assert _leaks(record_text, forms) == [], record_text[:300]
    captured = capfd.readouterr()
    assert _leaks(captured.out + captured.err, forms) == []
    for text in texts:
        assert _leaks(text, forms) == [], text[:300]


def _assert_driver_logged(handler: CapturingHandler, mode: DriverMode) -> None:
    # The checks mean something only if the loggers were active. PyMySQL and the C
    # extension log nothing of the protocol; the pure-Python mode does, at DEBUG.
    assert "securemysql.factory" in handler.names()
    if mode.driver == "mysql.connector" and mode.use_pure:
        assert "mysql.connector" in handler.names()


@pytest.mark.parametrize("mode", MODES)
def test_connect_outputs_no_token(
    sandbox: Sandbox,
    mode: DriverMode,
    debug_logs: CapturingHandler,
    capfd: pytest.CaptureFixture[str],
) -> None:
    factory = _factory(sandbox, mode)

    connection = factory()
    cursor = connection.cursor()
    cursor.execute("SELECT CURRENT_USER()")
    cursor.fetchall()
    cursor.close()
    token = _current_token(factory)
    objects = _object_texts(factory, connection, securemysql.connection_tls_info(connection))
    connection.close()

    _assert_driver_logged(debug_logs, mode)
    _assert_no_leaks(debug_logs, capfd, _secret_forms([token], sandbox), objects)


@pytest.mark.parametrize("mode", MODES)
def test_rejected_token_outputs_no_token(
    sandbox: Sandbox,
    mode: DriverMode,
    debug_logs: CapturingHandler,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The system identity's token names another MySQL user, so the server rejects it twice.
    factory = _factory(sandbox, mode, user=sandbox.info.user_assigned_user)

    with pytest.raises(AuthenticationError) as caught:
        factory()

    token = _current_token(factory)
    assert sandbox.verifier.rejections, "the server never saw the token"
    assert any(record.levelno == logging.WARNING for record in debug_logs.records)
    _assert_no_leaks(
        debug_logs,
        capfd,
        _secret_forms([token], sandbox),
        _exception_text(caught.value),
        _object_texts(factory),
    )


@pytest.mark.parametrize("mode", MODES)
def test_tls_failure_outputs_no_token(
    sandbox: Sandbox,
    mode: DriverMode,
    debug_logs: CapturingHandler,
    capfd: pytest.CaptureFixture[str],
) -> None:
    factory = _factory(sandbox, mode)
    sandbox.restart(tls=TLSMode.WRONG_HOST)

    with pytest.raises(HostnameMismatchError) as caught:
        factory()

    token = _current_token(factory)
    _assert_no_leaks(
        debug_logs,
        capfd,
        _secret_forms([token], sandbox),
        _exception_text(caught.value),
        _object_texts(factory),
    )


@pytest.mark.parametrize("mode", MODES)
def test_forced_refresh_outputs_no_token(
    sandbox: Sandbox,
    mode: DriverMode,
    debug_logs: CapturingHandler,
    capfd: pytest.CaptureFixture[str],
) -> None:
    factory = _factory(sandbox, mode)
    factory().close()
    first = _current_token(factory)

    sandbox.rotate_signing_key()  # the cached token now fails at login
    connection = factory()
    second = _current_token(factory)
    objects = _object_texts(factory, connection)
    connection.close()

    assert second != first
    assert sandbox.identity.request_count == 2
    assert any("refreshing the token" in record.getMessage() for record in debug_logs.records)
    _assert_no_leaks(debug_logs, capfd, _secret_forms([first, second], sandbox), objects)


@pytest.mark.parametrize("mode", MODES)
def test_open_connection_keeps_no_token(sandbox: Sandbox, mode: DriverMode) -> None:
    factory = _factory(sandbox, mode)
    connection = factory()
    token = _current_token(factory)

    attributes = "\n".join(f"{name}={value!r}" for name, value in vars(connection).items())

    assert token not in attributes
    assert token.encode() not in b"".join(
        value for value in vars(connection).values() if isinstance(value, bytes)
    )
    cursor = connection.cursor()
    cursor.execute("SELECT CURRENT_USER()")
    assert cursor.fetchone()[0] == "sandbox-app@%"
    cursor.close()
    connection.close()
