"""Redaction of access tokens and passwords from log records and error messages.

Drivers log secrets: when a server switches mysql-connector-python (26.10,
pure-Python mode) to ``mysql_clear_password``, it logs its reply at DEBUG on the
``mysql.connector`` logger as ``# request: b'<password>\\x00' size: N``, the
bytes repr of the clear-text password. A :class:`logging.Filter` attached to a
logger does not run for records that propagate from child loggers, so filters
alone cannot cover every logger a library may create later. :func:`install`
therefore wraps the process-wide log record factory: every record that any
:class:`logging.Logger` creates is redacted before any handler or filter
receives it.

What is redacted, in this order, and replaced by ``[REDACTED]``:

1. Every secret passed to :func:`register_secret` (the most recent
   :data:`MAX_REGISTERED_SECRETS`), also in its ``repr``, bytes-repr,
   percent-encoded and hex forms.
2. Anything shaped like a JWT (``eyJ...`` segments joined by dots), also
   hex-encoded.
3. The value of a ``password=``, ``token=``, ``secret=`` (and similar) pair,
   of ``"access_token": "..."`` style JSON or dict entries, of ``Bearer``
   credentials, and the password in ``scheme://user:password@host`` URLs.

Limits: values passed with ``logging``'s ``extra=`` are set after the record
factory runs, so only :class:`RedactingFilter` (attached to a handler) redacts
them, and only when they are strings or bytes. PyMySQL's packet dumps go to
``print`` (when ``pymysql.connections.DEBUG`` is set), not to ``logging``, and
are not redacted. A secret split across lines of a hex dump is not found.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import quote

__all__ = [
    "MAX_REGISTERED_SECRETS",
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "install",
    "is_installed",
    "redact",
    "register_secret",
]

REDACTED = "[REDACTED]"

#: Registered secrets kept; older ones are forgotten first. Access tokens live
#: 5 to 60 minutes, so a process holds only a few valid ones at a time.
MAX_REGISTERED_SECRETS = 64

#: Shorter strings would turn up inside ordinary words and wreck every log line.
MIN_SECRET_LENGTH = 6

_NOT_REDACTED = rf"(?!{re.escape(REDACTED)})"

# Three base64url segments (JWS; the signature may be empty), or five (JWE).
_JWT = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)?"
)

# "eyJ" is 65 79 4a in hex and "." is 2e; the payload of a JWT also starts with "eyJ".
_HEX_JWT = re.compile(r"65794a[0-9a-f]*?2e65794a[0-9a-f]*", re.IGNORECASE)

_SECRET_KEY = r"[\w.-]*(?:password|passwd|pwd|secret|token|identity[_-]header|api[_-]?key)[\w.-]*"

_QUOTED_VALUE = r"""b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""

# key=value, key = "value", key=b'value'
_ASSIGNED_SECRET = re.compile(
    rf"(?P<key>\b{_SECRET_KEY}\s*=\s*){_NOT_REDACTED}"
    rf"(?P<value>{_QUOTED_VALUE}|[^\s,;&)\]}}'\"]+)",
    re.IGNORECASE,
)

# "key": "value" (JSON) and 'key': 'value' (Python dict repr). An unquoted key
# followed by a colon is left alone: MySQL writes "(using password: YES)".
_MAPPED_SECRET = re.compile(
    rf"""(?P<key>(?P<quote>["']){_SECRET_KEY}(?P=quote)\s*:\s*){_NOT_REDACTED}"""
    rf"(?P<value>{_QUOTED_VALUE}|[^\s,;&)\]}}'\"]+)",
    re.IGNORECASE,
)

_BEARER = re.compile(rf"\b(?P<key>Bearer\s+){_NOT_REDACTED}(?P<value>[A-Za-z0-9._~+/-]{{8,}}=*)")

_URL_PASSWORD = re.compile(
    rf"(?P<key>\b[a-z][a-z0-9+.-]*://[^:/?#\s@]*:){_NOT_REDACTED}(?P<value>[^@/?#\s]+)(?=@)",
    re.IGNORECASE,
)


# --- Registered secrets ------------------------------------------------------


class _SecretRegistry:
    """Bounded, thread-safe set of secrets and the text forms they may take in logs."""

    __slots__ = ("_forms", "_lock", "_secrets")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._forms: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<secret registry: {len(self._secrets)} secrets>"

    def add(self, secret: str) -> None:
        with self._lock:
            self._secrets[secret] = None
            self._secrets.move_to_end(secret)
            while len(self._secrets) > MAX_REGISTERED_SECRETS:
                self._secrets.popitem(last=False)

            forms = {form for known in self._secrets for form in _text_forms(known)}
            # Longest first, so that a secret containing another is replaced whole.
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for form in self._forms:  # the tuple is replaced, never changed, so no lock is needed
            if form in text:
                text = text.replace(form, REDACTED)
        return text


def _text_forms(secret: str) -> set[str]:
    forms = {secret, repr(secret)[1:-1], quote(secret, safe="")}

    for encoding in ("utf-8", "latin-1"):
        try:
            encoded = secret.encode(encoding)
        except UnicodeEncodeError:
            continue
        forms.add(repr(encoded)[2:-1])
        forms.add(encoded.hex())
        forms.add(encoded.hex().upper())

    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


_registry = _SecretRegistry()


def register_secret(secret: str) -> None:
    """Add ``secret`` to the strings that :func:`redact` and log records hide.

    Keeps the most recent :data:`MAX_REGISTERED_SECRETS` secrets. Registering
    the same secret again only marks it as recent.

    Raises:
        TypeError: ``secret`` is not a string.
        ValueError: ``secret`` is shorter than :data:`MIN_SECRET_LENGTH`
            characters (the message gives only its length).
    """
    if not isinstance(secret, str):
        raise TypeError(f"secret must be a str, not {type(secret).__name__}")

    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"a secret of {len(secret)} characters is too short to redact reliably; "
            f"the minimum is {MIN_SECRET_LENGTH}"
        )

    _registry.add(secret)


# --- Text redaction -----------------------------------------------------------


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and secret-shaped values replaced by ``[REDACTED]``.

    Call it on any driver or library text before putting it into a log record
    or exception message. Text without secrets is returned unchanged.
    """
    if not text:
        return text

    text = _registry.redact(text)
    text = _JWT.sub(REDACTED, text)
    text = _HEX_JWT.sub(REDACTED, text)
    text = _ASSIGNED_SECRET.sub(_keep_key, text)
    text = _MAPPED_SECRET.sub(_keep_key, text)
    text = _BEARER.sub(_keep_key, text)
    text = _URL_PASSWORD.sub(_keep_key, text)
    return text


def _keep_key(match: re.Match[str]) -> str:
    value = match.group("value")
    if value[:1] in ("'", '"'):
        return f"{match.group('key')}{value[0]}{REDACTED}{value[0]}"
    if value[:2] in ("b'", 'b"'):
        return f"{match.group('key')}b{value[1]}{REDACTED}{value[1]}"
    return f"{match.group('key')}{REDACTED}"


# --- Log records ----------------------------------------------------------------

_traceback_formatter = logging.Formatter()

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


def _redact_record(record: logging.LogRecord) -> None:
    """Redact the message, arguments, traceback and stack of ``record`` in place."""
    _redact_message(record)
    _redact_exception(record)

    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redact_message(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        # The handler will report the formatting error and print msg and args: redact those.
        record.msg = redact(str(record.msg))
        record.args = _redact_arguments(record.args)
        return

    redacted = redact(message)
    if redacted != message:
        # The merged text replaces msg and args, because the secret may sit in either.
        record.msg = redacted
        record.args = ()


def _redact_arguments(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {key: _redact_value(value) for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(_redact_value(value) for value in args)
    return args


def _redact_value(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        text = str(bytes(value))
    elif isinstance(value, str):
        text = value
    else:
        return value
    redacted = redact(text)
    return value if redacted == text else redacted


def _redact_exception(record: logging.LogRecord) -> None:
    if record.exc_text:
        record.exc_text = redact(record.exc_text)

    if not record.exc_info or record.exc_info[0] is None:
        return

    text = _traceback_formatter.formatException(record.exc_info)
    redacted = redact(text)
    if redacted != text:
        # Keep only the redacted text: a formatter that renders exc_info itself would
        # print the secret. logging.Formatter prints exc_text when exc_info is None.
        record.exc_text = redacted
        record.exc_info = None


def _redact_extras(record: logging.LogRecord) -> None:
    for name, value in list(record.__dict__.items()):
        if name not in _STANDARD_RECORD_ATTRIBUTES:
            record.__dict__[name] = _redact_value(value)


def _blank_record(record: logging.LogRecord) -> None:
    record.msg = "[securemysql could not redact this log record, so its text was dropped]"
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None


class RedactingFilter(logging.Filter):
    """Handler filter that redacts records, including string values passed with ``extra=``.

    :func:`install` already covers records created by loggers. Attach this
    filter to a handler to also cover ``extra=`` values and records built
    without the record factory (for example by :func:`logging.makeLogRecord`).
    It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            _redact_record(record)
            _redact_extras(record)
        except Exception:
            _blank_record(record)
        return True


# --- Record factory ---------------------------------------------------------------

_RecordFactory = Callable[..., logging.LogRecord]


class _RedactingRecordFactory:
    """Log record factory that redacts each record made by the wrapped factory."""

    __slots__ = ("wrapped",)

    def __init__(self, wrapped: _RecordFactory) -> None:
        self.wrapped = wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.wrapped(*args, **kwargs)
        try:
            _redact_record(record)
        except Exception:
            # Fail closed: a record that cannot be checked is not passed on with its text.
            _blank_record(record)
        return record


_install_lock = threading.Lock()


def install() -> None:
    """Make every log record created from now on pass through :func:`redact`.

    Wraps :func:`logging.getLogRecordFactory`, so records of all loggers are
    covered, including loggers created later. Safe to call from several
    threads and several times: while the current factory is the redacting
    one, later calls do nothing. If other code later replaces the factory
    without wrapping it, calling ``install()`` again wraps the new one.
    """
    with _install_lock:
        current = logging.getLogRecordFactory()
        if isinstance(current, _RedactingRecordFactory):
            return
        logging.setLogRecordFactory(_RedactingRecordFactory(current))


def is_installed() -> bool:
    """Tell whether the current log record factory is the redacting one."""
    return isinstance(logging.getLogRecordFactory(), _RedactingRecordFactory)
