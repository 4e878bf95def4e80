"""Data of a ``securemysql check`` run: options, stages, findings, posture items and exit codes.

Everything here is plain data that both the human-readable report and the JSON
document are rendered from, so the two always carry the same content. No
value in these objects is ever an access token: stages store decoded claims
and names, never the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: Version of the JSON document (``"schema_version"``); raised on incompatible changes.
SCHEMA_VERSION = 1

# Stage and posture outcomes, as they appear in the JSON document.
PASS = "pass"
FAIL = "fail"
WARN = "warn"
SKIPPED = "skipped"
NOT_VISIBLE = "not_visible"

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class StageSpec:
    """One stage of the check: its JSON name, its title for people and its exit code."""

    number: int
    name: str
    title: str
    exit_code: int


RESOLUTION = StageSpec(1, "resolution", "Name resolution", 10)
TCP = StageSpec(2, "tcp", "TCP connect", 11)
TLS = StageSpec(3, "tls", "TLS", 12)
TOKEN = StageSpec(4, "token", "Access token", 13)
AUTHENTICATION = StageSpec(5, "authentication", "Authentication", 14)
SESSION = StageSpec(6, "session", "Session", 15)
POSTURE = StageSpec(7, "posture", "Security posture", 16)

#: The stages in the order they run.
STAGES = (RESOLUTION, TCP, TLS, TOKEN, AUTHENTICATION, SESSION, POSTURE)


@dataclass(frozen=True)
class CheckOptions:
    """What to check and how; the ``securemysql check`` options.

    Attributes:
        host: server host name or IP address.
        port: TCP port.
        user: MySQL user name created for the Microsoft Entra identity.
        database: database to open, or None for none.
        driver: ``"pymysql"`` or ``"mysql.connector"``.
        ssl_ca: PEM file of the CA certificates to trust; None uses the
            default bundle (certifi plus the Azure Database for MySQL roots).
        client_id: client ID of a user-assigned managed identity, or None.
        scope: scope to request tokens for; None derives it from the host name.
        timeout: seconds allowed for each network step and for the token request.
        strict: make failed posture items fail the run (exit code 16).
    """

    host: str
    user: str
    port: int = 3306
    database: Optional[str] = None
    driver: str = "pymysql"
    ssl_ca: Optional[str] = None
    client_id: Optional[str] = None
    scope: Optional[str] = None
    timeout: float = 10.0
    strict: bool = False


@dataclass(frozen=True)
class Fact:
    """One thing a stage learned, with its JSON value and the text shown to people.

    Attributes:
        key: JSON property name inside the stage's ``details``.
        label: label in the human-readable report.
        value: JSON-ready value (str, number, bool, None, list or dict of these).
        text: the value as people read it.
        status: PASS or FAIL when the fact is itself a check result, else None.
    """

    key: str
    label: str
    value: Any
    text: str
    status: Optional[str] = None


@dataclass(frozen=True)
class Problem:
    """Why a stage failed and what to do about it.

    Attributes:
        cause: what failed, naming the value involved.
        fix: what to change so that the stage passes.
        likely_causes: further causes to look at, most likely first.
        error_number: the MySQL error number, when the server or driver gave one.
    """

    cause: str
    fix: str
    likely_causes: tuple[str, ...] = ()
    error_number: Optional[int] = None


@dataclass(frozen=True)
class PostureItem:
    """One security setting of the server, as far as a client can see it.

    Attributes:
        name: stable identifier, such as ``require_secure_transport``.
        title: what the item is about, for people.
        status: PASS, FAIL or NOT_VISIBLE.
        value: the value read from the server or derived from the run, if any.
        detail: why the status was given.
        where_to_check: where to look when a client cannot tell (Azure portal
            page or ``az`` command), else None.
    """

    name: str
    title: str
    status: str
    value: Optional[str]
    detail: str
    where_to_check: Optional[str] = None


@dataclass(frozen=True)
class StageResult:
    """Outcome of one stage.

    Attributes:
        spec: which stage.
        status: PASS, FAIL, WARN (posture failures without ``--strict``) or SKIPPED.
        duration_ms: wall-clock time the stage took, in milliseconds; None when skipped.
        summary: one line saying what happened.
        facts: what the stage learned, also when it failed.
        problem: why it failed, for FAIL only.
    """

    spec: StageSpec
    status: str
    duration_ms: Optional[float]
    summary: str
    facts: tuple[Fact, ...] = ()
    problem: Optional[Problem] = None


@dataclass(frozen=True)
class CheckReport:
    """Everything one check run found, in stage order.

    Attributes:
        options: the options the run used.
        generated_at: when the run started, ISO 8601 in UTC.
        stages: one result per stage, skipped ones included.
        posture: the posture items, empty unless the posture stage ran.
        version: version of securemysql that produced the report.
    """

    options: CheckOptions
    generated_at: str
    stages: tuple[StageResult, ...]
    posture: tuple[PostureItem, ...] = field(default=())
    version: str = ""

    @property
    def failed_stage(self) -> Optional[StageResult]:
        """The stage that failed, or None when the run passed."""
        return next((stage for stage in self.stages if stage.status == FAIL), None)

    @property
    def exit_code(self) -> int:
        """0 when no stage failed, else the failed stage's exit code."""
        failed = self.failed_stage
        return EXIT_OK if failed is None else failed.spec.exit_code
