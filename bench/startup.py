"""Start-up cost: ``import securemysql`` and ``securemysql --help`` against ``import pymysql``.

Run from the repository: ``.venv/bin/python -m bench.startup`` (no sandbox, no root).

Every figure is the wall time of a fresh subprocess, median of ``--runs`` runs,
with the commands interleaved so that all see the same machine load. The
``-X importtime`` figures are the interpreter's own cumulative import times of
the top-level package. The script also lists the modules that
``import securemysql`` loads beyond a bare interpreter and checks that neither
azure-identity nor a database driver is among them. Target: ``import
securemysql`` costs at most 20 ms more than ``import pymysql``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import append_record

TARGET_MS = 20.0
PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("securemysql"))

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "import pymysql": [PYTHON, "-c", "import pymysql"],
    "import securemysql": [PYTHON, "-c", "import securemysql"],
    # Builds a factory without connecting: no network, but the driver, the TLS
    # policy and the default CA bundle are loaded.
    "import securemysql + ConnectionFactory(...)": [
        PYTHON,
        "-c",
        "import securemysql; securemysql.ConnectionFactory('db.mysql.database.azure.com', 'app')",
    ],
    "securemysql --help": [CLI, "--help"],
}

# Top-level modules that ``import securemysql`` must not load.
FORBIDDEN_PREFIXES = ("azure", "pymysql", "mysql", "_mysql_connector", "sqlalchemy", "msal")

_IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s?(\s*)(\S+)")


def _wall_time(command: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _failure(command: Sequence[str]) -> str:
    """Run ``command`` once; return its last error line if it fails, else an empty string."""
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode == 0:
        return ""
    last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return f"exit status {result.returncode}: {last_line}"


def measure_wall_times(runs: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Run every command ``runs`` times, interleaved, after one untimed run each.

    Returns the times of the commands that succeeded and the error of those that failed.
    """
    failures = {name: _failure(command) for name, command in COMMANDS.items()}
    failures = {name: error for name, error in failures.items() if error}
    working = {name: command for name, command in COMMANDS.items() if name not in failures}
    times: dict[str, list[float]] = {name: [] for name in working}
    for _ in range(runs):
        for name, command in working.items():
            times[name].append(_wall_time(command))
    return times, failures


def cumulative_import_ms(module: str, runs: int) -> float:
    """Return the median ``-X importtime`` cumulative time of the top-level ``module``, in ms."""
    values = []
    for _ in range(runs):
        result = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", f"import {module}"],
            check=True,
            capture_output=True,
            text=True,
        )
        for line in result.stderr.splitlines():
            match = _IMPORTTIME_LINE.match(line)
            if match and not match.group(3) and match.group(4) == module:
                values.append(int(match.group(2)) / 1000)
    return statistics.median(values)


def loaded_modules(code: str) -> set[str]:
    """Return ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([PYTHON, "-c", script], check=True, capture_output=True, text=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def _module_report() -> tuple[list[str], list[str]]:
    """Return (new top-level modules, forbidden modules) that ``import securemysql`` loads."""
    baseline = loaded_modules("pass")
    added = loaded_modules("import securemysql") - baseline
    top_level = sorted({name.split(".")[0] for name in added})
    forbidden = sorted(name for name in added if name.split(".")[0].startswith(FORBIDDEN_PREFIXES))
    return top_level, forbidden


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per command (default 30)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    times, failures = measure_wall_times(args.runs)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    importtime_securemysql = cumulative_import_ms("securemysql", args.runs)
    importtime_pymysql = cumulative_import_ms("pymysql", args.runs)
    top_level, forbidden = _module_report()

    added = medians["import securemysql"] - medians["import pymysql"]
    first_use = medians.get("import securemysql + ConnectionFactory(...)", float("nan"))
    lines = [f"{name}: median {value:.1f} ms (n={args.runs})" for name, value in medians.items()]
    lines += [
        f"{name}: not measured, the command failed ({error})" for name, error in failures.items()
    ]
    lines += [
        f"-X importtime cumulative: securemysql {importtime_securemysql:.1f} ms, "
        f"pymysql {importtime_pymysql:.1f} ms (median of {args.runs})",
        f"import securemysql minus import pymysql: {added:+.1f} ms "
        f"({'meets' if added <= TARGET_MS else 'misses'} the target of at most {TARGET_MS:.0f} ms)",
        f"building a ConnectionFactory minus import pymysql: "
        f"{first_use - medians['import pymysql']:+.1f} ms (loads PyMySQL, the TLS policy, the "
        "default CA bundle and tenacity; azure-identity follows at the first token)",
        f"Top-level modules that import securemysql adds to a bare interpreter: "
        f"{', '.join(top_level)}",
        f"azure-identity or driver modules among them: {', '.join(forbidden) or 'none'}",
    ]
    append_record("Start-up cost of import securemysql and the CLI", lines)
    return 1 if forbidden else 0


if __name__ == "__main__":
    sys.exit(main())
