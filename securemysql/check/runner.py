"""Run the check's stages in order, timing each, and stop at the first failure."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable

from securemysql import redaction
from securemysql.check import login, network, posture, tlsprobe
from securemysql.check.model import (
    AUTHENTICATION,
    FAIL,
    PASS,
    POSTURE,
    RESOLUTION,
    SESSION,
    SKIPPED,
    STAGES,
    TCP,
    TLS,
    TOKEN,
    WARN,
    CheckOptions,
    CheckReport,
    Problem,
    StageResult,
    StageSpec,
)
from securemysql.check.stage import FactRecorder, RunState, StageFailed

logger = logging.getLogger("securemysql.check")

StageFunction = Callable[[RunState, FactRecorder], None]

_FUNCTIONS: dict[str, StageFunction] = {
    RESOLUTION.name: network.run_resolution,
    TCP.name: network.run_tcp,
    TLS.name: tlsprobe.run_tls,
    TOKEN.name: login.run_token,
    AUTHENTICATION.name: login.run_authentication,
    SESSION.name: login.run_session,
    POSTURE.name: posture.run_posture,
}


def run_check(options: CheckOptions) -> CheckReport:
    """Run every stage against the server in ``options`` and return the report.

    Stages run in order and the run stops at the first failed stage; later
    stages are reported as skipped. Each stage's exceptions are caught, so
    failures of the server, the network or the credential end up in the
    report. KeyboardInterrupt and SystemExit pass through.
    """
    from securemysql import __version__

    redaction.install()
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    state = RunState(options=options)
    results: list[StageResult] = []
    try:
        for spec in STAGES:
            result = _run_stage(spec, state)
            results.append(result)
            if result.status == FAIL:
                break
    finally:
        state.close()

    for spec in STAGES[len(results) :]:
        results.append(StageResult(spec=spec, status=SKIPPED, duration_ms=None, summary="not run"))

    return CheckReport(
        options=options,
        generated_at=generated_at,
        stages=tuple(results),
        posture=tuple(state.posture),
        version=__version__,
    )


def _run_stage(spec: StageSpec, state: RunState) -> StageResult:
    facts = FactRecorder()
    function = _FUNCTIONS[spec.name]
    logger.debug("stage %d (%s) starts", spec.number, spec.name)
    started = time.perf_counter()

    status = PASS
    problem = None
    try:
        function(state, facts)
    except StageFailed as failure:
        status, problem = FAIL, failure.problem
        facts.summary = failure.summary
    except Exception as exc:  # report any other error as this stage's failure
        logger.debug("stage %s raised an unexpected error", spec.name, exc_info=True)
        status = FAIL
        text = redaction.redact(str(exc)) or "no message"
        problem = Problem(
            cause=f"Unexpected {type(exc).__name__}: {text}",
            fix="Run again with -vv for the traceback, and report it if the cause is unclear.",
        )
        facts.summary = f"unexpected {type(exc).__name__}"

    if status == PASS and facts.warning:
        status = WARN
    duration_ms = (time.perf_counter() - started) * 1000.0
    logger.debug("stage %d (%s): %s in %.1f ms", spec.number, spec.name, status, duration_ms)

    return StageResult(
        spec=spec,
        status=status,
        duration_ms=round(duration_ms, 3),
        summary=facts.summary or status,
        facts=tuple(facts.facts),
        problem=problem,
    )
