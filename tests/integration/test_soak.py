"""Short soak: committed writes survive a restart, a kill, key rotations and an endpoint outage.

The full 10-minute soak is ``python -m bench.soak`` (see docs/soak.md); this
runs the same code for 75 s with 4 threads, and asserts correctness only.
"""

from __future__ import annotations

import pytest

from bench.soak import (
    SoakPlan,
    SoakReport,
    ThreadLedger,
    checksum,
    expected_rows,
    run_soak,
    transaction_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT_PLAN = SoakPlan(
    threads=4,
    duration=75.0,
    token_lifetime=60.0,
    rotation_interval=20.0,
    restarts=1,
    kills=1,
    outage=10.0,
    pool_recycle=10.0,
    join_timeout=180.0,
)


@pytest.fixture(scope="module")
def report() -> SoakReport:
    return run_soak(SHORT_PLAN)


def test_soak_runs_every_planned_event(report: SoakReport) -> None:
    names = [event.split(": ", 1)[1].split(" ", 1)[0] for event in report.events]

    assert names.count("restart") == 1
    assert names.count("kill") == 1
    assert names.count("outage") == 1
    assert names.count("rotate") == 3


def test_soak_commits_transactions(report: SoakReport) -> None:
    assert report.committed > 0
    assert report.verification.table_rows > 0


def test_soak_loses_no_committed_write(report: SoakReport) -> None:
    assert report.verification.lost == []
    assert report.verification.lost_count == 0


def test_soak_duplicates_no_write(report: SoakReport) -> None:
    assert report.verification.duplicated == []
    assert report.verification.duplicated_count == 0


def test_soak_failed_transactions_did_not_commit(report: SoakReport) -> None:
    assert report.verification.unrecorded == []
    assert report.verification.unrecorded_count == 0


def test_soak_table_matches_ledger(report: SoakReport) -> None:
    check = report.verification

    assert check.table_rows == check.expected_rows
    assert check.table_checksum == check.expected_checksum
    assert check.counter_mismatches == []


def test_soak_failures_were_transient(report: SoakReport) -> None:
    assert report.other_errors == []


def test_soak_no_thread_hangs(report: SoakReport) -> None:
    assert report.hung_threads == []


# The checks below feed the ledger comparison hand-made tables, so that a
# comparison that could never report a lost or duplicated write is caught.


def _ledger(thread_id: int, finished: int, unknown: set[int], abandoned: set[int]) -> ThreadLedger:
    return ThreadLedger(thread_id, next_sequence=finished, unknown=unknown, abandoned=abandoned)


def test_expected_rows_reports_lost_write() -> None:
    ledger = _ledger(0, 3, unknown=set(), abandoned=set())
    in_table = {transaction_id(0, 0), transaction_id(0, 2)}

    expected, lost, unknown_committed = expected_rows([ledger], in_table)

    assert lost == [transaction_id(0, 1)]
    assert set(expected) == in_table
    assert unknown_committed == 0


def test_expected_rows_resolves_unknown_commits() -> None:
    ledger = _ledger(1, 3, unknown={1, 2}, abandoned=set())
    in_table = {transaction_id(1, 0), transaction_id(1, 2)}

    expected, lost, unknown_committed = expected_rows([ledger], in_table)

    assert lost == []
    assert unknown_committed == 1
    assert set(expected) == in_table


def test_expected_rows_leaves_out_abandoned() -> None:
    ledger = _ledger(2, 2, unknown=set(), abandoned={1})
    in_table = {transaction_id(2, 0), transaction_id(2, 1)}

    expected, lost, _ = expected_rows([ledger], in_table)

    assert lost == []
    assert transaction_id(2, 1) not in expected
    assert in_table - set(expected) == {transaction_id(2, 1)}


def test_checksum_depends_on_amounts() -> None:
    rows = {transaction_id(0, 0): 5, transaction_id(0, 1): 7}
    changed = {transaction_id(0, 0): 5, transaction_id(0, 1): 8}

    assert checksum(rows)[0] == 12
    assert checksum(rows) != checksum(changed)
