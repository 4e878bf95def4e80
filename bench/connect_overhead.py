"""Connect overhead: securemysql with a warm token cache against the raw driver.

Run as root from the repository: ``.venv/bin/python -m bench.connect_overhead``.

For each driver mode, securemysql's ``ConnectionFactory`` (token already cached)
and the bare driver connect to the same sandbox with the same access token and
the same TLS settings. PyMySQL gets the same ``ssl.SSLContext`` object, and
mysql-connector the same CA file with certificate and host-name verification.
The two are interleaved (ABBA order) so that both see the same machine load.
Only the connect call is timed; closing is not. Target: the ratio of the
medians is at most 1.05. Every mode (with ``--no-profile`` only a mode over
target) is then profiled with cProfile: the time per connect by package, the
functions with the most own time, with and without securemysql, and the
securemysql steps with the most cumulative time.
"""

from __future__ import annotations

# The C extension of mysql-connector-python 26.x links against a newer OpenSSL
# than Debian 12's; it imports only when loaded before the ``ssl`` module.
# Loading it first lets the benchmark measure it where it can work at all.
try:
    import _mysql_connector  # noqa: F401
except ImportError as _cext_error:
    C_EXTENSION_ERROR: str | None = str(_cext_error).splitlines()[0]
else:
    C_EXTENSION_ERROR = None

import argparse
import cProfile
import pstats
import ssl
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import securemysql
from bench.report import append_record, percentile, summary_ms
from securemysql.errors import SecureMySQLError
from securemysql.sandbox import Sandbox, SandboxInfo

TARGET_RATIO = 1.05
MODES = ("pymysql", "mysql.connector-pure", "mysql.connector-c")


@dataclass
class ModeResult:
    """Timings of one driver mode, in seconds per connect."""

    mode: str
    secure: list[float]
    raw: list[float]
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.secure) / statistics.median(self.raw)


def _ssl_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _factory(info: SandboxInfo, mode: str, context: ssl.SSLContext) -> Any:
    """Build the securemysql factory for ``mode`` with the default retry policy."""
    common: dict[str, Any] = {"port": info.port, "database": info.database}
    if mode == "pymysql":
        return securemysql.ConnectionFactory(
            info.host, info.user, driver="pymysql", ssl_context=context, **common
        )
    return securemysql.ConnectionFactory(
        info.host,
        info.user,
        driver="mysql.connector",
        use_pure=mode.endswith("-pure"),
        ssl_ca=info.ssl_ca,
        **common,
    )


def _raw_connector(
    info: SandboxInfo, mode: str, token: str, context: ssl.SSLContext
) -> Callable[[], Any]:
    """Return a function that connects with the bare driver, as careful hand-written code does."""
    if mode == "pymysql":
        import pymysql

        def connect_pymysql() -> Any:
            return pymysql.connect(
                host=info.host,
                port=info.port,
                user=info.user,
                password=token,
                database=info.database,
                connect_timeout=10,
                program_name="bench",
                ssl=context,
            )

        return connect_pymysql

    import mysql.connector

    def connect_mysql_connector() -> Any:
        return mysql.connector.connect(
            host=info.host,
            port=info.port,
            user=info.user,
            password=token,
            database=info.database,
            connection_timeout=10,
            ssl_ca=info.ssl_ca,
            ssl_verify_cert=True,
            ssl_verify_identity=True,
            auth_plugin="mysql_clear_password",
            use_pure=mode.endswith("-pure"),
        )

    return connect_mysql_connector


def _timed(connect: Callable[[], Any]) -> float:
    started = time.perf_counter()
    connection = connect()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def _measure(
    secure: Callable[[], Any], raw: Callable[[], Any], connects: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Time ``connects`` connects of each kind, alternating which goes first (ABBA)."""
    for _ in range(warmup):
        _timed(secure)
        _timed(raw)

    secure_times: list[float] = []
    raw_times: list[float] = []
    for index in range(connects):
        if index % 2 == 0:
            secure_times.append(_timed(secure))
            raw_times.append(_timed(raw))
        else:
            raw_times.append(_timed(raw))
            secure_times.append(_timed(secure))
    return secure_times, raw_times


def _package_of(filename: str) -> str:
    """Name the package that a profiled function belongs to, for the breakdown."""
    for marker, name in (
        ("/securemysql/", "securemysql"),
        ("/tenacity/", "tenacity"),
        ("/pymysql/", "pymysql"),
        ("/mysql/connector/", "mysql.connector"),
        ("/azure/", "azure"),
    ):
        if marker in filename:
            return name
    if filename.startswith("<built-in") or filename == "~":
        return "built-in functions (sockets, TLS, hashing)"
    return "standard library (Python code)"


def _profile(connect: Callable[[], Any], connects: int) -> Any:
    """Profile ``connects`` connects (closing is not profiled) and return the pstats data."""
    profiler = cProfile.Profile()
    for _ in range(connects):
        profiler.enable()
        connection = connect()
        profiler.disable()
        connection.close()
    return pstats.Stats(profiler).stats  # type: ignore[attr-defined]


def _time_by_package(stats: Any, connects: int) -> dict[str, float]:
    """Return seconds of own time per connect, by package."""
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, own_time, _cum, _callers) in stats.items():
        totals[_package_of(filename)] += own_time
    return {package: seconds / connects for package, seconds in totals.items()}


def _top_functions(
    stats: Any, connects: int, count: int, packages: tuple[str, ...] | None = None
) -> list[str]:
    """Return the ``count`` functions (of ``packages``, if given) with the most own time."""
    rows = []
    for (filename, line, name), (_cc, calls, own_time, cumulative, _callers) in stats.items():
        if packages is None or _package_of(filename) in packages:
            short = filename.split("/site-packages/")[-1].split("/work/main/")[-1]
            rows.append((own_time, cumulative, calls, f"{short}:{line} {name}"))
    rows.sort(reverse=True)
    return [
        _function_line(own, cum, calls, label, connects) for own, cum, calls, label in rows[:count]
    ]


def _function_line(own: float, cumulative: float, calls: int, label: str, connects: int) -> str:
    return (
        f"{label}: own {own / connects * 1e6:.1f} us, cumulative "
        f"{cumulative / connects * 1e6:.1f} us, {calls / connects:.1f} calls per connect"
    )


def _sdk_steps(stats: Any, connects: int, count: int) -> list[str]:
    """Return the securemysql functions with the most cumulative time, below half a connect.

    Functions that wrap the driver's connect (the factory, the retry layer) take
    the whole connect time. Leaving them out shows the SDK's own steps, such as a
    query that the driver module runs after login.
    """
    total = sum(own for (_cc, _nc, own, _cum, _callers) in stats.values())
    rows = []
    for (filename, line, name), (_cc, calls, own_time, cumulative, _callers) in stats.items():
        if _package_of(filename) == "securemysql" and cumulative < total / 2:
            short = filename.split("/site-packages/")[-1].split("/work/main/")[-1]
            rows.append((cumulative, own_time, calls, f"{short}:{line} {name}"))
    rows.sort(reverse=True)
    return [
        _function_line(own, cum, calls, label, connects) for cum, own, calls, label in rows[:count]
    ]


def _profile_lines(
    mode: str, secure: Callable[[], Any], raw: Callable[[], Any], connects: int
) -> list[str]:
    secure_stats = _profile(secure, connects)
    raw_stats = _profile(raw, connects)
    secure_profile = _time_by_package(secure_stats, connects)
    raw_profile = _time_by_package(raw_stats, connects)

    prefix = f"{mode} profile ({connects} connects each, own time per connect)"
    lines = []
    for package in sorted(set(secure_profile) | set(raw_profile)):
        with_sdk = secure_profile.get(package, 0.0) * 1e6
        without = raw_profile.get(package, 0.0) * 1e6
        lines.append(
            f"{prefix}, {package}: securemysql {with_sdk:.0f} us, raw {without:.0f} us, "
            f"difference {with_sdk - without:+.0f} us"
        )
    lines.append(
        f"{prefix}, all: securemysql {sum(secure_profile.values()) * 1e6:.0f} us, "
        f"raw {sum(raw_profile.values()) * 1e6:.0f} us"
    )
    lines.extend(
        f"{mode} raw, top function {row}" for row in _top_functions(raw_stats, connects, 3)
    )
    top = _top_functions(secure_stats, connects, 3)
    lines.extend(f"{mode} securemysql, top function {row}" for row in top)
    top = _top_functions(secure_stats, connects, 8, ("securemysql", "tenacity"))
    lines.extend(f"{mode} securemysql/tenacity function {row}" for row in top)
    steps = _sdk_steps(secure_stats, connects, 5)
    lines.extend(f"{mode} securemysql step by cumulative time {row}" for row in steps)
    return lines


def _mode_available(mode: str) -> str:
    """Return why ``mode`` cannot run here, or an empty string when it can."""
    if mode == "mysql.connector-c" and C_EXTENSION_ERROR is not None:
        return f"C extension not importable ({C_EXTENSION_ERROR})"
    if mode.startswith("mysql.connector"):
        try:
            from securemysql.drivers import load_driver

            load_driver("mysql.connector", use_pure=mode.endswith("-pure"))
        except (ImportError, SecureMySQLError) as exc:
            return f"securemysql's mysql-connector driver is not available ({exc})"
    return ""


def run_mode(sandbox: Sandbox, mode: str, args: argparse.Namespace) -> tuple[ModeResult, list[str]]:
    """Measure one driver mode; profile it unless it meets the target and --no-profile is given."""
    info = sandbox.info
    context = _ssl_context(info.ssl_ca)
    factory = _factory(info, mode, context)
    token = factory.tokens.get_token().token
    raw = _raw_connector(info, mode, token, context)

    secure_times, raw_times = _measure(factory, raw, args.connects, args.warmup)
    result = ModeResult(mode, secure_times, raw_times)
    profile: list[str] = []
    if not args.no_profile or result.ratio > TARGET_RATIO:
        profile = _profile_lines(mode, factory, raw, args.profile_connects)
    return result, profile


def _result_lines(result: ModeResult) -> list[str]:
    verdict = "meets" if result.ratio <= TARGET_RATIO else "misses"
    spread = percentile(result.secure, 0.9) / percentile(result.raw, 0.9)
    return [
        f"{result.mode}: securemysql {summary_ms(result.secure)}; "
        f"raw driver {summary_ms(result.raw)}",
        f"{result.mode}: ratio of medians {result.ratio:.3f} ({verdict} the target "
        f"{TARGET_RATIO}), ratio of p90 {spread:.3f}",
    ]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connects",
        type=int,
        default=300,
        help="timed connects of each kind per mode (default 300)",
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed connects first (default 20)"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="driver modes to measure"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="profile only the modes over target"
    )
    parser.add_argument(
        "--profile-connects", type=int, default=100, help="connects per profile (default 100)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    lines: list[str] = []
    with Sandbox() as sandbox, sandbox.environment():
        for mode in args.modes:
            reason = _mode_available(mode)
            if reason:
                lines.append(f"{mode}: not measured: {reason}")
                continue
            result, profile = run_mode(sandbox, mode, args)
            lines.extend(_result_lines(result))
            lines.extend(profile)
        lines.append(f"Identity endpoint requests: {sandbox.identity.request_count}")

    if C_EXTENSION_ERROR is None:
        lines.append("mysql-connector C extension loaded before the ssl module (see the script)")
    append_record("Connect overhead with a warm token cache (securemysql / raw driver)", lines)


if __name__ == "__main__":
    main()
