"""Retry connection attempts that fail with transient errors, using tenacity."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, TypeVar

import tenacity

from securemysql.errors import (
    ConfigurationError,
    ConnectionFailedError,
    SecureMySQLError,
)
from securemysql.redaction import redact
from securemysql.retry.classification import _message, classify, error_number
from securemysql.retry.table import Outcome

__all__ = ["RetryPolicy"]

# The package's name rather than this module's, so that logging configured for
# securemysql.retry still receives the retry WARNINGs.
_logger = logging.getLogger("securemysql.retry")

T = TypeVar("T")

_MAX_ERROR_TEXT = 200

_DEFAULT_MAX_ATTEMPTS = 40
_DEFAULT_DEADLINE = 150.0
_DEFAULT_INITIAL_WAIT = 2.0
_DEFAULT_MAX_WAIT = 15.0


# --- Retry policy -------------------------------------------------------------------


def _describe_error(exc: BaseException) -> str:
    """Return the exception's type and redacted text on one line, cut to _MAX_ERROR_TEXT.

    Redaction comes first, so that cutting the text cannot leave part of a token
    that redact() would no longer recognise.
    """
    text = " ".join(f"{type(exc).__name__}: {redact(_message(exc))}".split())
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 3] + "..."
    return text


def _should_retry(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and classify(exc) is Outcome.TRANSIENT


def _require_positive_seconds(name: str, value: object, example: float) -> None:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
    if not valid:
        raise ConfigurationError(
            f"RetryPolicy.{name} must be a finite number of seconds greater than 0,"
            f" got {value!r}. Pass a value such as {name}={example!r}."
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Limits for retrying connection attempts that fail with transient errors.

    The defaults are sized to ride out an outage of up to 120 s, the length this
    project assumes for an Azure Database for MySQL high-availability failover.
    The upper end of the random wait starts at 2 s and doubles up to 15 s, and
    retries stop after 150 s. After the fourth failed attempt, waits average 7.5 s,
    so 40 attempts would wait about 270 s in total (an estimate that ignores the
    time each attempt takes). In practice the deadline, not max_attempts, ends the
    retries, after about 20 to 25 attempts.

    Attributes:
        max_attempts: maximum number of attempts, the first one included (>= 1).
        deadline: seconds from the first attempt after which no wait ends and no
            new attempt starts. A running attempt is not interrupted, so the total
            time can exceed the deadline by one attempt, which the driver's connect
            time-out bounds.
        initial_wait: upper end, in seconds, of the random wait after the first
            failed attempt.
        max_wait: maximum, in seconds, of that upper end, which doubles after each
            failed attempt.
        enabled: False makes exactly one attempt, regardless of max_attempts.
        sleep: waits the given number of seconds between attempts; time.sleep by
            default. Tests pass a function that records the waits.
    """

    max_attempts: int = _DEFAULT_MAX_ATTEMPTS
    deadline: float = _DEFAULT_DEADLINE
    initial_wait: float = _DEFAULT_INITIAL_WAIT
    max_wait: float = _DEFAULT_MAX_WAIT
    enabled: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool):
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be an integer, got {self.max_attempts!r}."
            )
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}."
                " Use RetryPolicy.disabled() for a single attempt without retries."
            )

        _require_positive_seconds("deadline", self.deadline, _DEFAULT_DEADLINE)
        _require_positive_seconds("initial_wait", self.initial_wait, _DEFAULT_INITIAL_WAIT)
        _require_positive_seconds("max_wait", self.max_wait, _DEFAULT_MAX_WAIT)
        if self.initial_wait > self.max_wait:
            raise ConfigurationError(
                f"RetryPolicy.initial_wait ({self.initial_wait!r} s) must not exceed"
                f" max_wait ({self.max_wait!r} s). Lower initial_wait or raise max_wait."
            )

        if not isinstance(self.enabled, bool):
            raise ConfigurationError(
                f"RetryPolicy.enabled must be True or False, got {self.enabled!r}."
            )
        if not callable(self.sleep):
            raise ConfigurationError(
                f"RetryPolicy.sleep must be a function that waits the given seconds,"
                f" got {self.sleep!r}."
            )

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """Return a policy that makes exactly one attempt and never retries."""
        return cls(max_attempts=1, enabled=False)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        description: str,
        sleep: Optional[Callable[[float], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Call ``attempt``, retrying transient failures, and return its result.

        After failed attempt n, the wait is drawn uniformly from
        [0, min(initial_wait * 2 ** (n - 1), max_wait)] seconds ("full jitter", so
        that clients cut off by the same failover do not reconnect in step). A wait
        that would end after the deadline is shortened to end at it. Retrying stops
        when ``attempt`` succeeds, raises an error that classify() does not call
        transient, has been called max_attempts times, or the deadline has passed.

        Each call of ``attempt`` must open a new connection by host name, so that
        the host name is resolved again: during a failover the DNS record moves to
        the new primary. PyMySQL 1.2.4 and mysql-connector-python 26.10.0's
        pure-Python mode call socket.getaddrinfo() on every connect (an integration
        test counts the calls), its C extension resolves inside libmysqlclient on
        every connect (seen with strace), and nothing in securemysql caches addresses.

        Every retry logs a WARNING on the ``securemysql.retry`` logger with the
        description, the attempt number, the error number, the error text (passed
        through securemysql.redaction.redact() and cut to 200 characters) and the
        wait in seconds.

        Args:
            attempt: makes one connection attempt and returns its result.
            description: names the operation in log records and errors, for example
                ``"connect to myserver.mysql.database.azure.com:3306"``. It must not
                contain secrets.
            sleep: waits the given number of seconds; None uses the policy's sleep.
            clock: returns monotonic seconds. Tests pass a fake.

        Raises:
            ConnectionFailedError: retries ran out (``transient`` is True), or a
                driver error that is not transient occurred (``transient`` is False).
                The last error is chained as ``__cause__``.
            SecureMySQLError: a securemysql error that is not transient (a TLS,
                configuration, token or authentication error) is raised unchanged,
                and so is a transient one (a TokenAcquisitionError from an endpoint
                time-out, say) when retries are disabled.
            BaseException: exceptions that are not Exception subclasses, such as
                KeyboardInterrupt, propagate unchanged and are never retried.
        """
        start = clock()
        attempts = 0

        def counted_attempt() -> T:
            nonlocal attempts
            attempts += 1
            return attempt()

        try:
            if not self.enabled:
                return counted_attempt()
            wait = self.sleep if sleep is None else sleep
            return self._retrying(start, description, wait, clock)(counted_attempt)
        except Exception as exc:
            failure = self._failure(exc, description, attempts, clock() - start)
            if failure is None:
                raise
            raise failure from exc

    def _retrying(
        self,
        start: float,
        description: str,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> tenacity.Retrying:
        jitter = tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait)

        def wait(retry_state: tenacity.RetryCallState) -> float:
            remaining = self.deadline - (clock() - start)
            return max(0.0, min(jitter(retry_state), remaining))

        def stop(retry_state: tenacity.RetryCallState) -> bool:
            if retry_state.attempt_number >= self.max_attempts:
                return True
            return clock() - start >= self.deadline

        def log_retry(retry_state: tenacity.RetryCallState) -> None:
            self._log_retry(retry_state, description)

        return tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(_should_retry),
            sleep=sleep,
            before_sleep=log_retry,
            reraise=True,
        )

    def _log_retry(self, retry_state: tenacity.RetryCallState, description: str) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if exc is None:
            return

        number = error_number(exc)
        wait = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
        _logger.warning(
            "%s: attempt %d of %d failed with %s (%s), retrying in %.2f s",
            description,
            retry_state.attempt_number,
            self.max_attempts,
            f"error {number}" if number is not None else "an error without a MySQL error number",
            _describe_error(exc),
            wait,
            extra={
                "retry_attempt": retry_state.attempt_number,
                "retry_errno": number,
                "retry_wait": wait,
            },
        )

    def _failure(
        self, exc: Exception, description: str, attempts: int, elapsed: float
    ) -> Optional[ConnectionFailedError]:
        """Return the error that reports the final failure, or None to re-raise ``exc``."""
        outcome = classify(exc)
        if isinstance(exc, SecureMySQLError) and (
            outcome is not Outcome.TRANSIENT or not self.enabled
        ):
            # Our own errors already name what failed and what to do. With retries off, a
            # transient one (a token endpoint time-out, for example) reaches the caller as is.
            return None

        number = error_number(exc)
        summary = f"{description} failed after {attempts} attempt(s) in {elapsed:.1f} s"
        if outcome is not Outcome.TRANSIENT:
            message = (
                f"{summary} with an error that retrying cannot fix ({outcome.value}):"
                f" {_describe_error(exc)}. Fix the cause named in the chained exception."
            )
        elif not self.enabled:
            message = (
                f"{summary}: {_describe_error(exc)}. The error is transient, but retries"
                " are disabled. Pass a RetryPolicy with enabled=True to retry."
            )
        else:
            message = (
                f"{summary}: {_describe_error(exc)}. The server stayed unavailable for"
                f" the whole retry budget (max_attempts={self.max_attempts},"
                f" deadline={self.deadline!r} s). Check that the server is running and"
                " reachable, or raise RetryPolicy.deadline."
            )
        return ConnectionFailedError(
            message,
            attempts=attempts,
            elapsed=elapsed,
            errno=number,
            transient=outcome is Outcome.TRANSIENT,
        )
