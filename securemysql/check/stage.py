"""Shared parts of the stage functions: recorded facts, the failure they raise, the run state."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from securemysql.check.model import CheckOptions, Fact, PostureItem, Problem

if TYPE_CHECKING:
    from securemysql.tokens import AccessToken, TokenProvider


class StageFailed(Exception):
    """Raised by a stage function to end the run at this stage.

    The message is the stage's one-line summary; ``problem`` contains the cause and
    the fix. Neither may contain an access token.
    """

    def __init__(
        self,
        summary: str,
        *,
        cause: str,
        fix: str,
        likely_causes: Sequence[str] = (),
        error_number: Optional[int] = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.problem = Problem(
            cause=cause,
            fix=fix,
            likely_causes=tuple(likely_causes),
            error_number=error_number,
        )


class FactRecorder:
    """Collects the facts and the summary of one stage while it runs.

    Facts recorded before a stage fails stay in the report, so a failed run
    still shows everything it learned.
    """

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self.summary = ""
        self.warning = False

    def add(
        self,
        key: str,
        label: str,
        value: Any,
        text: Optional[str] = None,
        *,
        status: Optional[str] = None,
    ) -> None:
        """Record one fact; ``text`` defaults to ``str(value)``."""
        if text is None:
            text = "none" if value is None else str(value)
        self.facts.append(Fact(key=key, label=label, value=value, text=text, status=status))


@dataclass(frozen=True)
class ResolvedAddress:
    """One address the host name resolved to.

    Attributes:
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        sockaddr: the address tuple to pass to ``socket.connect``.
        address: the IP address as text.
        kind: ``"loopback"``, ``"private"``, ``"public"`` or ``"special"``
            (reserved ranges that are neither private nor public).
    """

    family: int
    sockaddr: tuple[Any, ...]
    address: str
    kind: str


@dataclass
class RunState:
    """State that earlier stages hand to later ones during one run.

    ``tcp_socket`` is the connection from the TCP stage, which the TLS stage
    takes over; ``connection`` is the driver connection from the
    authentication stage. :meth:`close` releases both and the token provider.
    """

    options: CheckOptions
    addresses: list[ResolvedAddress] = field(default_factory=list)
    endpoint_kind: Optional[str] = None
    connected: Optional[ResolvedAddress] = None
    tcp_socket: Optional[socket.socket] = None
    scope: Optional[str] = None
    provider: Optional[TokenProvider] = None
    token: Optional[AccessToken] = None
    connection: Any = None
    database_rejection: Optional[StageFailed] = None
    posture: list[PostureItem] = field(default_factory=list)

    def take_socket(self) -> Optional[socket.socket]:
        """Return the TCP stage's socket and forget it, so that only its new owner closes it."""
        sock, self.tcp_socket = self.tcp_socket, None
        return sock

    def close(self) -> None:
        """Close the socket, the driver connection and the token provider, ignoring close errors."""
        sock = self.take_socket()
        if sock is not None:
            sock.close()

        connection, self.connection = self.connection, None
        if connection is not None:
            # The server may already have closed it; the report is what matters here.
            with contextlib.suppress(Exception):
                connection.close()

        provider, self.provider = self.provider, None
        if provider is not None:
            provider.close()
