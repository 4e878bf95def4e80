"""Render a check report for people (aligned text, optional colour) or as one JSON document."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from importlib import resources
from typing import Any, Optional, TextIO

from securemysql.check.model import (
    FAIL,
    NOT_VISIBLE,
    PASS,
    SCHEMA_VERSION,
    SKIPPED,
    WARN,
    CheckReport,
    PostureItem,
    StageResult,
)

SCHEMA_RESOURCE = "check-report.schema.json"

_MARKS = {PASS: "PASS", FAIL: "FAIL", WARN: "WARN", SKIPPED: "SKIP", NOT_VISIBLE: "N/A "}
# ANSI SGR colours: green, red, yellow, dim, cyan.
_COLOURS = {PASS: "32", FAIL: "31", WARN: "33", SKIPPED: "2", NOT_VISIBLE: "36"}

_TITLE_WIDTH = 22
_DURATION_WIDTH = 10
_INDENT = " " * 9
_LABEL_WIDTH = 20
_MIN_WIDTH = 60
_MAX_WIDTH = 110


# --- JSON -------------------------------------------------------------------------------


def to_json_dict(report: CheckReport) -> dict[str, Any]:
    """Return the report as the JSON document that ``check-report.schema.json`` describes."""
    options = report.options
    failed = report.failed_stage
    return {
        "schema_version": SCHEMA_VERSION,
        "securemysql_version": report.version,
        "generated_at": report.generated_at,
        "target": {
            "host": options.host,
            "port": options.port,
            "user": options.user,
            "database": options.database,
            "driver": options.driver,
            "ssl_ca": options.ssl_ca,
            "client_id": options.client_id,
            "scope": options.scope,
            "timeout_s": options.timeout,
            "strict": options.strict,
        },
        "result": {
            "status": PASS if failed is None else FAIL,
            "exit_code": report.exit_code,
            "failed_stage": None if failed is None else failed.spec.name,
            "message": result_message(report),
        },
        "stages": [_stage_json(stage) for stage in report.stages],
        "posture": [_posture_json(item) for item in report.posture],
    }


def _stage_json(stage: StageResult) -> dict[str, Any]:
    problem = stage.problem
    return {
        "number": stage.spec.number,
        "name": stage.spec.name,
        "title": stage.spec.title,
        "status": stage.status,
        "duration_ms": stage.duration_ms,
        "summary": stage.summary,
        "details": {fact.key: fact.value for fact in stage.facts},
        "problem": None
        if problem is None
        else {
            "cause": problem.cause,
            "fix": problem.fix,
            "likely_causes": list(problem.likely_causes),
            "error_number": problem.error_number,
        },
    }


def _posture_json(item: PostureItem) -> dict[str, Any]:
    return {
        "name": item.name,
        "title": item.title,
        "status": item.status,
        "value": item.value,
        "detail": item.detail,
        "where_to_check": item.where_to_check,
    }


def render_json(report: CheckReport) -> str:
    """Return the JSON document, indented, with a final newline."""
    return json.dumps(to_json_dict(report), indent=2, ensure_ascii=False) + "\n"


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema of the document that :func:`render_json` writes."""
    text = resources.files("securemysql").joinpath("data").joinpath(SCHEMA_RESOURCE).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def result_message(report: CheckReport) -> str:
    """Return the report's last line: that all stages passed, or where the run stopped."""
    failed = report.failed_stage
    if failed is None:
        warned = [stage.spec.title for stage in report.stages if stage.status == WARN]
        suffix = f" (with warnings in: {', '.join(warned)})" if warned else ""
        return f"All stages passed{suffix}."
    return (
        f"Stopped at stage {failed.spec.number} ({failed.spec.title}): {failed.summary}. "
        f"Exit code {failed.spec.exit_code}."
    )


# --- Text ---------------------------------------------------------------------------------


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, never when NO_COLOR is set to a non-empty value or TERM=dumb."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_text(report: CheckReport, *, colour: bool = False, width: Optional[int] = None) -> str:
    """Return the report for people: one block per stage, then the posture items and the result."""
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    width = max(_MIN_WIDTH, min(width, _MAX_WIDTH))
    writer = _TextWriter(colour=colour, width=width)

    options = report.options
    database = f", database {options.database}" if options.database else ""
    writer.line(
        f"securemysql check: {options.user}@{options.host}:{options.port}"
        f"{database}, driver {options.driver}"
    )
    writer.line("")

    for stage in report.stages:
        _render_stage(writer, stage, report)

    writer.line("")
    status = PASS if report.failed_stage is None else FAIL
    writer.line(f"{writer.mark(status)} {result_message(report)}")
    return writer.text()


def _render_stage(writer: _TextWriter, stage: StageResult, report: CheckReport) -> None:
    title = f"{stage.spec.number}. {stage.spec.title}".ljust(_TITLE_WIDTH)
    duration = "" if stage.duration_ms is None else _format_duration(stage.duration_ms)
    heading = f"{writer.mark(stage.status)} {title}{duration.rjust(_DURATION_WIDTH)}  "
    summary_column = len(f"[{_MARKS[PASS]}] ") + _TITLE_WIDTH + _DURATION_WIDTH + 2
    writer.wrapped(stage.summary, " " * summary_column, first_prefix=heading)

    for fact in stage.facts:
        text = fact.text if fact.status is None else f"{writer.mark(fact.status)} {fact.text}"
        writer.field(fact.label, text)

    if stage.spec.name == "posture":
        for item in report.posture:
            _render_posture_item(writer, item)

    problem = stage.problem
    if problem is not None:
        if problem.error_number is not None:
            writer.field("error", str(problem.error_number))
        writer.field("cause", problem.cause)
        writer.field("fix", problem.fix)
        for number, cause in enumerate(problem.likely_causes, start=1):
            writer.field(f"likely cause {number}", cause)


def _render_posture_item(writer: _TextWriter, item: PostureItem) -> None:
    value = (
        "not visible from a client"
        if item.status == NOT_VISIBLE and item.value is None
        else item.value
    )
    writer.wrapped(f"{writer.mark(item.status)} {item.title} ({item.name}): {value}", _INDENT)
    writer.wrapped(item.detail, _INDENT + " " * 7)
    if item.where_to_check:
        writer.wrapped(f"check: {item.where_to_check}", _INDENT + " " * 7)


def _format_duration(milliseconds: float) -> str:
    if milliseconds >= 1000:
        return f"{milliseconds / 1000:.2f} s"
    return f"{milliseconds:.1f} ms"


class _TextWriter:
    """Collects lines, wrapping long values under their label."""

    def __init__(self, *, colour: bool, width: int) -> None:
        self._colour = colour
        self._width = width
        self._lines: list[str] = []

    def mark(self, status: str) -> str:
        text = f"[{_MARKS.get(status, status.upper())}]"
        if not self._colour:
            return text
        return f"\033[{_COLOURS.get(status, '0')}m{text}\033[0m"

    def line(self, text: str) -> None:
        self._lines.append(text)

    def field(self, label: str, text: str) -> None:
        prefix = f"{_INDENT}{label.ljust(_LABEL_WIDTH)} "
        self.wrapped(text, " " * len(prefix), first_prefix=prefix)

    def wrapped(self, text: str, indent: str, *, first_prefix: Optional[str] = None) -> None:
        # Colour codes count as width for textwrap; marks are short, so lines stay close enough.
        lines = textwrap.wrap(
            text,
            width=self._width,
            initial_indent=first_prefix if first_prefix is not None else indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        self._lines.extend(lines or [first_prefix or indent])

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self._lines) + "\n"
