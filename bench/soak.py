"""Soak test: small read-write transactions through a SQLAlchemy pool while things break.

Run as root from the repository: ``.venv/bin/python -m bench.soak`` (10 minutes,
16 threads) or ``--minutes 2`` for a shorter run. docs/soak.md describes the
test and its report; tests/integration/test_soak.py runs a short variant.

``--threads`` threads run transactions through one engine from
``securemysql.sqlalchemy.create_engine``. Each transaction has a unique id made
of the thread number and a sequence number. It reads its thread's counter row
(``FOR UPDATE``), inserts a row with the id and an amount derived from the id,
and adds the amount to the counter. The id counts as committed only after
``commit()`` returned. A
commit that raised has an unknown outcome (the connection may have died after
the server committed): its id is recorded as unknown, never retried, and looked
up in the table afterwards. A transaction that failed before ``commit()`` did
not commit, so it is retried with the same id when ``securemysql.is_transient``
calls the error transient; any other error is counted as a failure of the test.

Meanwhile the sandbox rotates its token-signing key every ``--rotation-interval``
seconds (tokens also expire after ``--token-lifetime`` seconds), restarts the
server ``--restarts`` times, kills every client connection ``--kills`` times
and makes the identity endpoint answer HTTP 500 for ``--outage-seconds``.

Afterwards the table is compared with the ledger: committed ids missing from
the table (lost writes), ids present more than once (duplicated writes), ids
present that no client recorded (writes reported as failed that committed),
row count and checksums, and each counter against the rows of its thread.
Threads that do not stop within ``--join-timeout`` seconds are reported as hung,
with their stacks. Memory is the process's resident set size (VmRSS), sampled
every 10 s. The ledger takes constant memory (per thread: the next sequence
number and the ids that did not commit for sure), so a growing RSS points at the
code under test, not at the bookkeeping.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import securemysql
from bench.report import append_record
from securemysql.retry import error_number
from securemysql.sandbox import Fault, Sandbox

logger = logging.getLogger("bench.soak")

# --- Plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakPlan:
    """The soak's workload size and events; durations in seconds.

    Events are placed at fixed fractions of ``duration``: restarts at 20 % and 60 %
    (one restart: 30 %), the connection kill at 45 %, the identity endpoint outage
    from 70 %. Key rotations come every ``rotation_interval`` seconds.
    """

    threads: int = 16
    duration: float = 600.0
    token_lifetime: float = 60.0
    rotation_interval: float = 60.0
    restarts: int = 2
    kills: int = 1
    outage: float = 30.0
    pool_recycle: float = 30.0
    join_timeout: float = 180.0

    def schedule(self) -> list[tuple[float, str]]:
        """Return (seconds from start, event name) pairs, sorted by time."""
        restart_fractions = [0.3] if self.restarts == 1 else [0.2, 0.6, 0.8, 0.9][: self.restarts]
        kill_fractions = [0.45, 0.85, 0.95][: self.kills]
        events = [(self.duration * fraction, "restart") for fraction in restart_fractions]
        events += [(self.duration * fraction, "kill") for fraction in kill_fractions]
        if self.outage > 0:
            events.append((self.duration * 0.7, "outage"))
        if self.rotation_interval > 0:
            moment = self.rotation_interval
            while moment < self.duration:
                events.append((moment, "rotate"))
                moment += self.rotation_interval
        return sorted(events)


# --- Ledger -----------------------------------------------------------------------------


class CommitOutcomeUnknown(Exception):
    """``commit()`` raised: the transaction may or may not have committed."""


def transaction_id(thread_id: int, sequence: int) -> str:
    """Return the unique id of a thread's transaction number ``sequence``."""
    return f"t{thread_id:03d}s{sequence:012d}"


def transaction_amount(thread_id: int, sequence: int) -> int:
    """Return the amount the transaction writes: 1 to 1000, derived from its id."""
    return zlib.crc32(transaction_id(thread_id, sequence).encode()) % 1000 + 1


@dataclass
class ThreadLedger:
    """The record of one worker thread's transactions; written only by that thread.

    Transactions 0 to ``next_sequence - 1`` are finished. Those in ``unknown``
    (commit raised) may be in the table, those in ``abandoned`` (failed before
    commit and not retried) must not be, and every other one committed.
    """

    thread_id: int
    next_sequence: int = 0
    unknown: set[int] = field(default_factory=set)
    abandoned: set[int] = field(default_factory=set)
    transient_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    other_errors: list[str] = field(default_factory=list)
    # Milliseconds from the first attempt to the commit -> number of transactions.
    latency_ms: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def committed(self) -> int:
        return self.next_sequence - len(self.unknown) - len(self.abandoned)

    def record_error(self, exc: BaseException, transient: bool, *, in_commit: bool = False) -> None:
        label = ("in commit: " if in_commit else "") + _error_label(exc)
        if transient:
            self.transient_errors[label] += 1
        elif len(self.other_errors) < 20:
            self.other_errors.append(f"{label}: {_first_line(exc)}")


def _error_label(exc: BaseException) -> str:
    """Return 'Type[DriverType] (errno N)' for grouping errors; the message is left out."""
    label = type(exc).__name__
    original = getattr(exc, "orig", None)
    if original is not None:
        label += f"[{type(original).__name__}]"
    number = error_number(exc)
    return f"{label} (errno {number})" if number is not None else label


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# --- Workload ---------------------------------------------------------------------------


def _admin_execute(sandbox: Sandbox, statements: Sequence[str]) -> list[tuple[Any, ...]]:
    """Run ``statements`` in the sandbox database as the admin user; return the last one's rows.

    The admin connection bypasses securemysql, so set-up and verification do not
    depend on the code under test.
    """
    rows: list[tuple[Any, ...]] = []
    with sandbox.server.admin_connection() as connection, connection.cursor() as cursor:
        connection.select_db(sandbox.info.database)
        for statement in statements:
            cursor.execute(statement)
            rows = list(cursor.fetchall())
    return rows


def _create_schema(sandbox: Sandbox, threads: int) -> None:
    _admin_execute(
        sandbox,
        [
            "DROP TABLE IF EXISTS soak_writes",
            "DROP TABLE IF EXISTS soak_counters",
            # row_id is the key, not txn_id, so that a transaction applied twice shows
            # up as two rows instead of failing with a duplicate-key error.
            "CREATE TABLE soak_writes ("
            " row_id BIGINT AUTO_INCREMENT PRIMARY KEY,"
            " txn_id VARCHAR(32) NOT NULL,"
            " thread_id INT NOT NULL,"
            " amount INT NOT NULL,"
            " KEY (txn_id)) ENGINE=InnoDB",
            "CREATE TABLE soak_counters ("
            " thread_id INT PRIMARY KEY, total BIGINT NOT NULL, writes INT NOT NULL)"
            " ENGINE=InnoDB",
        ],
    )
    with sandbox.server.admin_connection() as connection, connection.cursor() as cursor:
        connection.select_db(sandbox.info.database)
        cursor.executemany(
            "INSERT INTO soak_counters VALUES (%s, 0, 0)", [(index,) for index in range(threads)]
        )


def _transaction(engine: Any, thread_id: int, sequence: int) -> None:
    """Run one transaction; raise CommitOutcomeUnknown when commit() itself fails.

    Any other exception means the transaction did not commit.
    """
    from sqlalchemy import text

    parameters = {
        "txn": transaction_id(thread_id, sequence),
        "thread": thread_id,
        "amount": transaction_amount(thread_id, sequence),
    }
    committed = False
    try:
        with engine.connect() as connection:
            connection.execute(
                text("SELECT total FROM soak_counters WHERE thread_id = :thread FOR UPDATE"),
                parameters,
            ).fetchall()
            connection.execute(
                text(
                    "INSERT INTO soak_writes (txn_id, thread_id, amount) "
                    "VALUES (:txn, :thread, :amount)"
                ),
                parameters,
            )
            connection.execute(
                text(
                    "UPDATE soak_counters SET total = total + :amount, writes = writes + 1 "
                    "WHERE thread_id = :thread"
                ),
                parameters,
            )
            try:
                connection.commit()
            except Exception as exc:
                raise CommitOutcomeUnknown(_first_line(exc)) from exc
            committed = True
    except CommitOutcomeUnknown:
        raise
    except Exception:
        if not committed:
            raise
        # commit() returned, so the transaction committed; only returning the
        # connection to the pool failed, and the pool replaces it.


def _worker(engine: Any, ledger: ThreadLedger, stop: threading.Event) -> None:
    """Run transactions until ``stop`` is set; retry transient failures with the same id."""
    rng = random.Random(ledger.thread_id)
    while not stop.is_set():
        sequence = ledger.next_sequence
        started = time.monotonic()
        while True:
            try:
                _transaction(engine, ledger.thread_id, sequence)
            except CommitOutcomeUnknown as exc:
                cause = exc.__cause__ or exc
                ledger.unknown.add(sequence)
                ledger.record_error(cause, securemysql.is_transient(cause), in_commit=True)
                break
            except Exception as exc:
                transient = securemysql.is_transient(exc)
                ledger.record_error(exc, transient)
                if transient and not stop.is_set():
                    time.sleep(rng.uniform(0.05, 0.5))
                    continue
                ledger.abandoned.add(sequence)
                break
            ledger.latency_ms[int((time.monotonic() - started) * 1000)] += 1
            break
        ledger.next_sequence = sequence + 1


# --- Events -----------------------------------------------------------------------------


def _run_events(
    sandbox: Sandbox,
    plan: SoakPlan,
    started: float,
    stop: threading.Event,
    events_log: list[str],
    rss_samples: list[int],
) -> None:
    """Apply the plan's events at their times and sample memory every 10 s, until ``stop``."""
    pending = plan.schedule()
    next_sample = started
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_sample:
            rss_samples.append(rss_kib())
            next_sample = now + 10.0
        while pending and now - started >= pending[0][0]:
            _, name = pending.pop(0)
            events_log.append(_apply_event(sandbox, plan, name, now - started))
        stop.wait(0.2)


def _apply_event(sandbox: Sandbox, plan: SoakPlan, name: str, at: float) -> str:
    began = time.monotonic()
    detail = ""
    if name == "restart":
        sandbox.restart()
    elif name == "kill":
        detail = f", {sandbox.kill_connections()} connections killed"
    elif name == "outage":
        sandbox.identity.inject_fault(Fault.HTTP_500, duration=plan.outage)
        detail = f", identity endpoint answers HTTP 500 for {plan.outage:.0f} s"
    elif name == "rotate":
        sandbox.rotate_signing_key()
    took = time.monotonic() - began
    entry = f"{at:.0f} s: {name} (took {took:.1f} s{detail})"
    logger.info("event %s", entry)
    return entry


def rss_kib() -> int:
    """Return this process's resident set size in KiB (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


# --- Verification -----------------------------------------------------------------------


@dataclass
class Verification:
    """The table compared with the ledgers; lists hold transaction ids (at most 20 each)."""

    lost: list[str]
    lost_count: int
    duplicated: list[str]
    duplicated_count: int
    unrecorded: list[str]
    unrecorded_count: int
    unknown_committed: int
    unknown_not_committed: int
    expected_rows: int
    table_rows: int
    expected_checksum: tuple[int, int]
    table_checksum: tuple[int, int]
    counter_mismatches: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.lost_count == 0
            and self.duplicated_count == 0
            and self.unrecorded_count == 0
            and self.expected_rows == self.table_rows
            and self.expected_checksum == self.table_checksum
            and not self.counter_mismatches
        )


def expected_rows(
    ledgers: Sequence[ThreadLedger], in_table: set[str]
) -> tuple[dict[str, int], list[str], int]:
    """Return (rows that must be in the table, lost ids, unknown ids found committed)."""
    expected: dict[str, int] = {}
    lost: list[str] = []
    unknown_committed = 0
    for ledger in ledgers:
        for sequence in range(ledger.next_sequence):
            if sequence in ledger.abandoned:
                continue
            txn_id = transaction_id(ledger.thread_id, sequence)
            if sequence in ledger.unknown:
                if txn_id not in in_table:
                    continue
                unknown_committed += 1
            elif txn_id not in in_table:
                lost.append(txn_id)
                continue
            expected[txn_id] = transaction_amount(ledger.thread_id, sequence)
    return expected, lost, unknown_committed


def checksum(rows: dict[str, int]) -> tuple[int, int]:
    """Return (sum of amounts, XOR of CRC32('txn_id:amount')), as verify() computes in SQL."""
    digest = 0
    for txn_id, amount in rows.items():
        digest ^= zlib.crc32(f"{txn_id}:{amount}".encode())
    return sum(rows.values()), digest


def verify(sandbox: Sandbox, ledgers: Sequence[ThreadLedger]) -> Verification:
    """Read the tables as the admin user (not through securemysql) and compare."""
    rows = _admin_execute(sandbox, ["SELECT txn_id FROM soak_writes"])
    occurrences = collections.Counter(str(txn_id) for (txn_id,) in rows)
    in_table = set(occurrences)
    expected, lost, unknown_committed = expected_rows(ledgers, in_table)
    unknown_total = sum(len(ledger.unknown) for ledger in ledgers)
    unrecorded = sorted(in_table - set(expected))
    duplicated = sorted(txn_id for txn_id, seen in occurrences.items() if seen > 1)

    count, total, digest = _admin_execute(
        sandbox,
        [
            "SELECT COUNT(*), COALESCE(SUM(amount), 0),"
            " COALESCE(BIT_XOR(CRC32(CONCAT(txn_id, ':', amount))), 0) FROM soak_writes"
        ],
    )[0]
    counters = _admin_execute(
        sandbox,
        [
            "SELECT c.thread_id, c.total, c.writes, COALESCE(SUM(w.amount), 0), COUNT(w.row_id)"
            " FROM soak_counters c LEFT JOIN soak_writes w ON w.thread_id = c.thread_id"
            " GROUP BY c.thread_id, c.total, c.writes"
        ],
    )
    mismatches = [
        f"thread {thread}: counter {counter_total} / {writes} writes, "
        f"rows {rows_total} / {rows_count}"
        for thread, counter_total, writes, rows_total, rows_count in counters
        if (int(counter_total), int(writes)) != (int(rows_total), int(rows_count))
    ]
    return Verification(
        lost=lost[:20],
        lost_count=len(lost),
        duplicated=duplicated[:20],
        duplicated_count=len(duplicated),
        unrecorded=unrecorded[:20],
        unrecorded_count=len(unrecorded),
        unknown_committed=unknown_committed,
        unknown_not_committed=unknown_total - unknown_committed,
        expected_rows=len(expected),
        table_rows=int(count),
        expected_checksum=checksum(expected),
        table_checksum=(int(total), int(digest)),
        counter_mismatches=mismatches,
    )


# --- Report -----------------------------------------------------------------------------


def _histogram_percentile(histogram: collections.Counter[int], fraction: float) -> int:
    """Return the ``fraction`` quantile of a value -> count histogram (0 when empty)."""
    total = sum(histogram.values())
    if total == 0:
        return 0
    rank = fraction * (total - 1)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return value
    return max(histogram)


@dataclass
class SoakReport:
    """Everything the soak measured; ``ok`` is the verdict."""

    plan: SoakPlan
    elapsed: float
    verification: Verification
    ledgers: list[ThreadLedger]
    events: list[str]
    hung_threads: list[str]
    rss_samples_kib: list[int]
    rss_end_kib: int
    identity_status_counts: dict[int, int]
    token_rejections: int
    log_warnings: dict[str, int]

    @property
    def committed(self) -> int:
        return sum(ledger.committed for ledger in self.ledgers)

    @property
    def unknown(self) -> int:
        return sum(len(ledger.unknown) for ledger in self.ledgers)

    @property
    def transient_errors(self) -> collections.Counter[str]:
        merged: collections.Counter[str] = collections.Counter()
        for ledger in self.ledgers:
            merged.update(ledger.transient_errors)
        return merged

    @property
    def other_errors(self) -> list[str]:
        return [error for ledger in self.ledgers for error in ledger.other_errors]

    @property
    def ok(self) -> bool:
        return self.verification.ok and not self.hung_threads and not self.other_errors

    def _latency_line(self) -> str:
        histogram: collections.Counter[int] = collections.Counter()
        for ledger in self.ledgers:
            histogram.update(ledger.latency_ms)
        return (
            f"latency from first attempt to commit: median "
            f"{_histogram_percentile(histogram, 0.5)} ms, p99 "
            f"{_histogram_percentile(histogram, 0.99)} ms, max {max(histogram or [0])} ms"
        )

    def _memory_line(self) -> str:
        samples = self.rss_samples_kib or [0]
        # Samples at 10 % (after the pool and caches have filled), 25 %, 50 % and 75 %
        # of the run show whether growth levels off or keeps going.
        marks = [
            samples[min(len(samples) - 1, max(1, int(len(samples) * fraction)))] / 1024
            for fraction in (0.1, 0.25, 0.5, 0.75)
        ]
        return (
            f"Memory (VmRSS): start {samples[0] / 1024:.1f} MiB; at 10/25/50/75 % of the run "
            f"{' / '.join(f'{mark:.1f}' for mark in marks)} MiB; end "
            f"{self.rss_end_kib / 1024:.1f} MiB; max sampled {max(samples) / 1024:.1f} MiB "
            f"({len(samples)} samples, every 10 s)"
        )

    def lines(self) -> list[str]:
        """Return the report as lines for docs/benchmarks.md and the terminal."""
        plan, check = self.plan, self.verification
        transient = self.transient_errors
        lines = [
            f"Verdict: {'PASS' if self.ok else 'FAIL'}",
            f"Plan: {plan.threads} threads for {plan.duration:.0f} s, token lifetime "
            f"{plan.token_lifetime:.0f} s, key rotation every {plan.rotation_interval:.0f} s, "
            f"{plan.restarts} restarts, {plan.kills} kills, {plan.outage:.0f} s endpoint outage, "
            f"pool_recycle {plan.pool_recycle:.0f} s",
            f"Ran {self.elapsed:.0f} s; committed transactions {self.committed} "
            f"({self.committed / max(self.elapsed, 1e-9):.1f} per second); " + self._latency_line(),
            f"Lost committed writes: {check.lost_count}; duplicated writes: "
            f"{check.duplicated_count}; rows no client recorded as committed: "
            f"{check.unrecorded_count}",
            f"Commits with unknown outcome: {self.unknown} "
            f"({check.unknown_committed} found committed, {check.unknown_not_committed} not)",
            f"Rows: expected {check.expected_rows}, table {check.table_rows}; checksum (sum, "
            f"CRC32 XOR): expected {check.expected_checksum}, table {check.table_checksum}",
            f"Counter rows that disagree with their thread's writes: "
            f"{len(check.counter_mismatches)}",
            f"Transient errors (retried, or commit outcome unknown): {sum(transient.values())} "
            f"{dict(transient.most_common())}",
            f"Errors not classified transient: {len(self.other_errors)}",
            f"Hung threads (not stopped within {plan.join_timeout:.0f} s): "
            f"{len(self.hung_threads)}",
            self._memory_line(),
            f"Identity endpoint requests by HTTP status: {self.identity_status_counts}; "
            f"logins rejected by the token verifier: {self.token_rejections}",
            f"Warnings and errors logged by securemysql and SQLAlchemy's pool, by logger: "
            f"{self.log_warnings}",
            f"Events: {'; '.join(self.events)}",
        ]
        lines += [f"Not transient: {error}" for error in self.other_errors[:10]]
        lines += [f"Lost: {txn_id}" for txn_id in check.lost[:10]]
        lines += [f"Duplicated: {txn_id}" for txn_id in check.duplicated[:10]]
        lines += [f"Unrecorded: {txn_id}" for txn_id in check.unrecorded[:10]]
        lines += check.counter_mismatches[:10]
        lines += [f"Hung: {stack}" for stack in self.hung_threads]
        return lines


class _WarningCounter(logging.Handler):
    """Counts WARNING and higher records per logger name."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] += 1


# --- Run --------------------------------------------------------------------------------


def _create_engine(sandbox: Sandbox, plan: SoakPlan) -> Any:
    from securemysql.sqlalchemy import create_engine

    info = sandbox.info
    return create_engine(
        f"mysql+pymysql://{info.user}@{info.host}:{info.port}/{info.database}",
        ssl_ca=info.ssl_ca,
        pool_size=plan.threads,
        max_overflow=0,
        pool_recycle=plan.pool_recycle,
        # A statement whose reply does not arrive within 60 s fails instead of hanging a thread.
        connect_args={"read_timeout": 60, "write_timeout": 60},
    )


def _hung_thread_stacks(threads: Sequence[threading.Thread]) -> list[str]:
    frames = sys._current_frames()
    stacks = []
    for thread in threads:
        if not thread.is_alive():
            continue
        frame = frames.get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)[-4:]) if frame else "no stack"
        stacks.append(f"{thread.name}: {' | '.join(stack.split())}"[:1000])
    return stacks


def _join_all(threads: Sequence[threading.Thread], timeout: float) -> list[str]:
    """Join ``threads`` within ``timeout`` seconds in total; return stacks of those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return _hung_thread_stacks(threads)


def run_soak(plan: SoakPlan, *, progress: Optional[Callable[[str], None]] = None) -> SoakReport:
    """Start a sandbox, run the plan against it, verify the tables and return the report."""
    say = progress or (lambda message: None)
    warnings = _WarningCounter()
    # SQLAlchemy's pool logs an ERROR when returning a connection that died fails.
    counted = [logging.getLogger("securemysql"), logging.getLogger("sqlalchemy.pool")]
    saved_levels = [counted_logger.level for counted_logger in counted]
    for counted_logger in counted:
        if counted_logger.getEffectiveLevel() > logging.WARNING:
            counted_logger.setLevel(logging.WARNING)
        counted_logger.addHandler(warnings)
    try:
        with Sandbox(token_lifetime=plan.token_lifetime) as sandbox, sandbox.environment():
            return _run_against(sandbox, plan, warnings, say)
    finally:
        for counted_logger, level in zip(counted, saved_levels):
            counted_logger.removeHandler(warnings)
            counted_logger.setLevel(level)


def _run_against(
    sandbox: Sandbox, plan: SoakPlan, warnings: _WarningCounter, say: Callable[[str], None]
) -> SoakReport:
    _create_schema(sandbox, plan.threads)
    engine = _create_engine(sandbox, plan)
    ledgers = [ThreadLedger(index) for index in range(plan.threads)]
    stop = threading.Event()
    events: list[str] = []
    rss_samples: list[int] = []
    rejections_before = len(sandbox.verifier.rejections)

    with engine.connect():  # first login, so that the first RSS sample includes the imports
        pass
    started = time.monotonic()
    workers = [
        threading.Thread(
            target=_worker, args=(engine, ledger, stop), name=f"soak-{ledger.thread_id}"
        )
        for ledger in ledgers
    ]
    chaos = threading.Thread(
        target=_run_events,
        args=(sandbox, plan, started, stop, events, rss_samples),
        name="soak-events",
    )
    for thread in [*workers, chaos]:
        thread.daemon = True  # a hung thread must not keep the process alive
        thread.start()
    schedule = ", ".join(f"{name} at {moment:.0f} s" for moment, name in plan.schedule())
    say(f"running {plan.threads} threads for {plan.duration:.0f} s; events: {schedule}")

    stop.wait(plan.duration)
    stop.set()
    hung = _join_all([*workers, chaos], plan.join_timeout)
    elapsed = time.monotonic() - started
    rss_end = rss_kib()
    say(f"stopped after {elapsed:.0f} s; verifying")

    sandbox.identity.clear_fault()
    verification = verify(sandbox, ledgers)
    engine.dispose()
    return SoakReport(
        plan=plan,
        elapsed=elapsed,
        verification=verification,
        ledgers=ledgers,
        events=events,
        hung_threads=hung,
        rss_samples_kib=rss_samples,
        rss_end_kib=rss_end,
        identity_status_counts=sandbox.identity.status_counts(),
        token_rejections=len(sandbox.verifier.rejections) - rejections_before,
        log_warnings=dict(warnings.counts),
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SoakPlan()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=defaults.duration / 60, help="run time (default 10)"
    )
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="worker threads (default 16)"
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=defaults.token_lifetime,
        help="lifetime of the identity endpoint's tokens, in seconds (default 60)",
    )
    parser.add_argument(
        "--rotation-interval",
        type=float,
        default=defaults.rotation_interval,
        help="seconds between signing-key rotations (default 60; 0: none)",
    )
    parser.add_argument(
        "--restarts",
        type=int,
        choices=range(5),
        default=defaults.restarts,
        help="server restarts, 0 to 4 (default 2)",
    )
    parser.add_argument(
        "--kills",
        type=int,
        choices=range(4),
        default=defaults.kills,
        help="times every client connection is killed, 0 to 3 (default 1)",
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=defaults.outage,
        help="seconds the identity endpoint answers HTTP 500 (default 30; 0: no outage)",
    )
    parser.add_argument(
        "--pool-recycle",
        type=float,
        default=defaults.pool_recycle,
        help="seconds after which the pool replaces a connection (default 30)",
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=defaults.join_timeout,
        help="seconds all threads get to stop before those left count as hung (default 180)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log INFO and above to standard error"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    else:
        # azure-identity logs each failed token request as a WARNING, and SQLAlchemy's
        # pool each connection that died while being returned, with a traceback. The
        # report counts both instead of printing them.
        logging.getLogger("azure").addHandler(logging.NullHandler())
        logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())
    plan = SoakPlan(
        threads=args.threads,
        duration=args.minutes * 60,
        token_lifetime=args.token_lifetime,
        rotation_interval=args.rotation_interval,
        restarts=args.restarts,
        kills=args.kills,
        outage=args.outage_seconds,
        pool_recycle=args.pool_recycle,
        join_timeout=args.join_timeout,
    )
    report = run_soak(plan, progress=lambda message: print(message, flush=True))
    append_record("Soak test", report.lines())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
