"""Redaction keeps access tokens and passwords out of every logger's output."""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mysql.connector
import pytest

from securemysql import redaction
from securemysql.redaction import (
    MAX_REGISTERED_SECRETS,
    REDACTED,
    RedactingFilter,
    install,
    is_installed,
    redact,
    register_secret,
)
from tests.fakeserver import FakeMySQLServer

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJvc3NyZGJtcyJ9.c2lnbmF0dXJlLXJlZGFjdA"
RecordFactory = Callable[..., logging.LogRecord]
DRIVER_LOGGERS = ["", "securemysql", "pymysql", "mysql.connector", "azure", "urllib3"]


@dataclass
class CapturedLogs:
    stream: io.StringIO
    records: list[logging.LogRecord]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


class _RecordKeeper(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def original_factory() -> Iterator[RecordFactory]:
    """The record factory without redaction for the test; the previous one is restored after.

    Earlier tests (any connect) may have installed redaction already, so it is unwrapped here.
    """
    factory = logging.getLogRecordFactory()
    plain = factory.wrapped if isinstance(factory, redaction._RedactingRecordFactory) else factory
    logging.setLogRecordFactory(plain)
    yield plain
    logging.setLogRecordFactory(factory)


@pytest.fixture
def captured(original_factory: RecordFactory) -> Iterator[CapturedLogs]:
    """Every driver logger at DEBUG, redaction installed, output captured at the root."""
    install()
    stream = io.StringIO()
    records: list[logging.LogRecord] = []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    keeper = _RecordKeeper(records)
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(keeper)
    old_levels = {name: logging.getLogger(name).level for name in DRIVER_LOGGERS}
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)

    yield CapturedLogs(stream, records)

    root.removeHandler(handler)
    root.removeHandler(keeper)
    for name, level in old_levels.items():
        logging.getLogger(name).setLevel(level)


# --- Log records ---------------------------------------------------------------


def test_token_in_message(captured: CapturedLogs) -> None:
    logging.getLogger("securemysql.tokens").debug(f"acquired {TOKEN}")

    assert TOKEN not in captured.text
    assert f"securemysql.tokens DEBUG acquired {REDACTED}" in captured.text


def test_token_in_arguments(captured: CapturedLogs) -> None:
    logging.getLogger("azure.identity").info("token %s for scope %s", TOKEN, "https://x/.default")

    assert TOKEN not in captured.text
    assert f"token {REDACTED} for scope https://x/.default" in captured.text


def test_token_as_bytes_argument(captured: CapturedLogs) -> None:
    # The form mysql-connector 26.10 uses for the mysql_clear_password response.
    response = TOKEN.encode() + b"\x00"
    logging.getLogger("mysql.connector").debug("# request: %s size: %s", response, len(response))

    assert TOKEN not in captured.text
    assert f"# request: b'{REDACTED}\\x00' size: {len(response)}" in captured.text


def test_registered_secret_in_mapping(captured: CapturedLogs) -> None:
    password = f"plain-{uuid.uuid4()}"
    register_secret(password)
    logging.getLogger("pymysql").warning(
        "login as %(user)s with %(pw)s", {"user": "u", "pw": password}
    )

    assert password not in captured.text
    assert f"login as u with {REDACTED}" in captured.text


def test_registered_secret_as_hex(captured: CapturedLogs) -> None:
    password = f"hex-{uuid.uuid4()}"
    register_secret(password)
    logging.getLogger("urllib3.connectionpool").debug("packet %s", password.encode().hex())

    assert password.encode().hex() not in captured.text
    assert f"packet {REDACTED}" in captured.text


def test_non_ascii_secret_as_bytes(captured: CapturedLogs) -> None:
    password = f"pässwörd-{uuid.uuid4()}"
    register_secret(password)
    logging.getLogger("mysql.connector").debug("utf-8 %s", password.encode("utf-8"))
    logging.getLogger("pymysql").debug("latin-1 %s", password.encode("latin-1"))

    assert "utf-8 b'" + REDACTED + "'" in captured.text
    assert "latin-1 b'" + REDACTED + "'" in captured.text
    assert "w\\xc3\\xb6rd" not in captured.text
    assert "w\\xf6rd" not in captured.text


def test_token_in_traceback(captured: CapturedLogs) -> None:
    try:
        try:
            raise ValueError(f"token was {TOKEN}")
        except ValueError as inner:
            raise RuntimeError("login failed") from inner
    except RuntimeError:
        logging.getLogger("securemysql.factory").exception("connect failed")

    assert TOKEN not in captured.text
    assert "RuntimeError: login failed" in captured.text
    assert f"ValueError: token was {REDACTED}" in captured.text
    assert captured.records[-1].exc_info is None


def test_clean_traceback_kept(captured: CapturedLogs) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("securemysql").exception("lookup failed")

    record = captured.records[-1]
    assert record.exc_info is not None
    assert "KeyError: 'missing'" in captured.text


def test_late_logger_redacted(captured: CapturedLogs) -> None:
    name = f"azure.identity._internal.msal_managed_identity_client.{uuid.uuid4().hex}"
    logging.getLogger(name).debug('response {"access_token": "%s"}', TOKEN)

    assert TOKEN not in captured.text
    assert f'{name} DEBUG response {{"access_token": "{REDACTED}"}}' in captured.text


def test_non_propagating_logger_redacted(captured: CapturedLogs) -> None:
    stream = io.StringIO()
    logger = logging.getLogger(f"isolated.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler(stream))

    logger.debug("Authorization: Bearer %s", TOKEN)

    assert TOKEN not in stream.getvalue()
    assert f"Authorization: Bearer {REDACTED}" in stream.getvalue()


def test_unrelated_message_unchanged(captured: CapturedLogs) -> None:
    arguments = ("db.example.com", 3306)
    logging.getLogger("pymysql").debug("connecting to %s:%d", *arguments)
    logging.getLogger("mysql.connector").info(
        "Access denied for user 'u'@'h' (using password: YES)"
    )

    first, second = captured.records[-2:]
    assert first.msg == "connecting to %s:%d"
    assert first.args == arguments
    assert second.getMessage() == "Access denied for user 'u'@'h' (using password: YES)"
    assert REDACTED not in captured.text


def test_bad_format_still_redacted(captured: CapturedLogs) -> None:
    factory = logging.getLogRecordFactory()

    record = factory("n", logging.DEBUG, "f.py", 1, f"{TOKEN} %s %s", ("one", TOKEN), None)

    assert TOKEN not in str(record.msg)
    assert TOKEN not in str(record.args)


def test_unreadable_record_dropped(captured: CapturedLogs) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    factory = logging.getLogRecordFactory()

    record = factory("n", logging.DEBUG, "f.py", 1, Unprintable(), (), None)

    assert "could not redact" in record.getMessage()


# --- Installation -----------------------------------------------------------------


def test_install_twice_wraps_once(original_factory: RecordFactory) -> None:
    install()
    install()

    factory = logging.getLogRecordFactory()
    assert is_installed()
    assert isinstance(factory, redaction._RedactingRecordFactory)
    assert factory.wrapped is original_factory


def test_install_from_threads_wraps_once(original_factory: RecordFactory) -> None:
    threads = [threading.Thread(target=install) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    factory = logging.getLogRecordFactory()
    assert isinstance(factory, redaction._RedactingRecordFactory)
    assert factory.wrapped is original_factory


def test_install_after_replacement(original_factory: RecordFactory) -> None:
    install()
    logging.setLogRecordFactory(logging.LogRecord)
    assert not is_installed()

    install()

    assert is_installed()


def test_without_install_token_leaks(original_factory: RecordFactory) -> None:
    # The control for the tests above: the capture itself does not hide anything.
    stream = io.StringIO()
    logger = logging.getLogger(f"control.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler(stream))

    logger.debug("token %s", TOKEN)

    assert not is_installed()
    assert TOKEN in stream.getvalue()


# --- Handler filter -------------------------------------------------------------------


def test_filter_redacts_extra_and_manual_records() -> None:
    record = logging.makeLogRecord(
        {"msg": "token %s", "args": (TOKEN,), "client_token": TOKEN, "attempt": 2}
    )

    keep = RedactingFilter().filter(record)

    assert keep is True
    assert record.getMessage() == f"token {REDACTED}"
    assert record.client_token == REDACTED
    assert record.attempt == 2


def test_filter_on_handler(original_factory: RecordFactory) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"filtered.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    handler.setFormatter(logging.Formatter("%(message)s %(session)s"))

    logger.debug("token %s", TOKEN, extra={"session": f"password={TOKEN}"})

    assert TOKEN not in stream.getvalue()
    assert stream.getvalue() == f"token {REDACTED} password={REDACTED}\n"


# --- Text redaction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token {TOKEN}.", f"token {REDACTED}."),
        ("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end", f"unsigned {REDACTED} end"),
        (
            "jwe eyJhbGciOiJkaXIifQ..aXYtaXYtaXY.Y2lwaGVydGV4dA.dGFnLXRhZw end",
            f"jwe {REDACTED} end",
        ),
        ((TOKEN.encode() + b"\0").hex(), REDACTED),
        ((TOKEN.encode()).hex().upper(), REDACTED),
        ("password=hunter2 user=app", f"password={REDACTED} user=app"),
        ("PASSWORD = 'a b c', next", f"PASSWORD = '{REDACTED}', next"),
        ("{'password': 'abc', 'user': 'u'}", f"{{'password': '{REDACTED}', 'user': 'u'}}"),
        ("{'password1': b'abc'}", f"{{'password1': b'{REDACTED}'}}"),
        (
            '{"access_token": "abc.def", "expires_in": 3599}',
            f'{{"access_token": "{REDACTED}", "expires_in": 3599}}',
        ),
        ("client_secret=xyz&scope=s", f"client_secret={REDACTED}&scope=s"),
        ("'X-IDENTITY-HEADER': 'abc123'", f"'X-IDENTITY-HEADER': '{REDACTED}'"),
        ("Authorization: Bearer abcdefghijkl", f"Authorization: Bearer {REDACTED}"),
        ("mysql://app:p%40ss@db.example.com/app", f"mysql://app:{REDACTED}@db.example.com/app"),
        ("Access denied for user 'u'@'h' (using password: YES)", None),
        ("connecting to db.example.com:3306", None),
        ("scope https://ossrdbms-aad.database.windows.net/.default", None),
        ("", None),
    ],
)
def test_redact_text(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


@pytest.mark.parametrize(
    "text",
    [f"password={REDACTED}", f"{{'password': '{REDACTED}'}}", f"Bearer {REDACTED}", REDACTED],
)
def test_redact_is_idempotent(text: str) -> None:
    assert redact(text) == text


# --- Registered secrets -----------------------------------------------------------------


def test_short_secret_rejected() -> None:
    with pytest.raises(ValueError, match="3 characters") as raised:
        register_secret("abc")

    assert "abc" not in str(raised.value)


def test_non_string_secret_rejected() -> None:
    with pytest.raises(TypeError, match="bytes"):
        register_secret(b"secret-bytes")  # type: ignore[arg-type]


def test_registry_keeps_newest_secrets() -> None:
    secrets = [f"bounded-{index}-{uuid.uuid4()}" for index in range(MAX_REGISTERED_SECRETS + 1)]
    for secret in secrets:
        register_secret(secret)

    assert redact(secrets[0]) == secrets[0]
    assert redact(secrets[1]) == REDACTED
    assert redact(secrets[-1]) == REDACTED


def test_registry_repr_hides_secrets() -> None:
    secret = f"hidden-{uuid.uuid4()}"
    register_secret(secret)

    assert secret not in repr(redaction._registry)
    assert "secrets" in repr(redaction._registry)


def test_longer_secret_replaced_whole() -> None:
    short = f"prefix-{uuid.uuid4().hex[:8]}"
    register_secret(short)
    register_secret(short + "-longer-part")

    assert redact(f"x {short}-longer-part y") == f"x {REDACTED} y"


# --- Driver logging end to end ------------------------------------------------------------


def connect_mysql_connector(server: FakeMySQLServer) -> None:
    connection = mysql.connector.connect(
        host=server.host,
        port=server.port,
        user="app-user",
        password=TOKEN,
        use_pure=True,
        ssl_ca=server.ca_file,
        ssl_verify_cert=True,
        ssl_verify_identity=True,
        connection_timeout=5,
    )
    connection.close()


def test_mysql_connector_logs_password_without_install(original_factory: RecordFactory) -> None:
    # Shows what the next test guards against: mysql-connector logs the clear password.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("mysql.connector")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        with FakeMySQLServer(
            "tls_ok", clear_password_via="auth_switch", auth_result="ok"
        ) as server:
            connect_mysql_connector(server)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    assert not is_installed()
    assert TOKEN in stream.getvalue()


def test_mysql_connector_password_redacted(captured: CapturedLogs) -> None:
    # mysql-connector 26.10 logs the password when the server switches it to
    # mysql_clear_password (not when the greeting names that plugin).
    with FakeMySQLServer("tls_ok", clear_password_via="auth_switch", auth_result="ok") as server:
        connect_mysql_connector(server)

    messages = [record.getMessage() for record in captured.records]
    assert server.contains(TOKEN)
    assert f"# request: b'{REDACTED}\\x00' size: {len(TOKEN) + 1}" in messages
    assert TOKEN not in captured.text
