"""Shared helpers for benchmark scripts: machine details and the docs/benchmarks.md record."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

BENCHMARKS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_PACKAGES = ("securemysql", "pymysql", "mysql-connector-python", "azure-identity", "sqlalchemy")


def machine_details() -> str:
    """Return one line naming cores, memory, OS, Python and package versions."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for package in _PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return (
        f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.platform()}, "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` quantile (0..1) of ``values`` by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summary_ms(values: Sequence[float]) -> str:
    """Return 'median X ms, p90 Y ms (n=N)' for durations given in seconds."""
    return (
        f"median {statistics.median(values) * 1000:.2f} ms, "
        f"p90 {percentile(values, 0.9) * 1000:.2f} ms (n={len(values)})"
    )


def append_record(title: str, lines: Sequence[str]) -> None:
    """Print a result block and append it to docs/benchmarks.md with command, machine and date."""
    command = "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [
        f"### {title} ({stamp})",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_details()}",
        *[f"- {line}" for line in lines],
        "",
    ]
    text = "\n".join(block) + "\n"
    print(text)
    BENCHMARKS_PAGE.parent.mkdir(exist_ok=True)
    if not BENCHMARKS_PAGE.exists():
        BENCHMARKS_PAGE.write_text("# Benchmarks\n\nRecords appended by the scripts in bench/.\n\n")
    with BENCHMARKS_PAGE.open("a") as page:
        page.write(text)
