"""Cold start: many threads ask for a connection at once while no token is cached.

Run as root from the repository: ``.venv/bin/python -m bench.cold_start``.

Each round releases ``--threads`` threads together (a barrier). With securemysql
they share one new ``ConnectionFactory``, whose token cache is empty, so the
identity endpoint should see exactly one request. The baseline is the naive
pattern: each thread builds its own ``ManagedIdentityCredential``, calls
``get_token`` and connects with PyMySQL, which costs one endpoint request per
connection. Reported per variant: identity endpoint requests per round (target
for securemysql: exactly 1) and the time from the release to the last
connection, median over the rounds. Connections stay open until every thread is
done, so the server has ``--threads`` sessions open at the peak.
"""

from __future__ import annotations

import argparse
import math
import ssl
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.report import append_record
from securemysql.sandbox import Fault, Sandbox, SandboxInfo
from securemysql.tokens import SCOPE_PUBLIC


@dataclass
class Round:
    """One round of one variant: endpoint requests, seconds to the last connection, errors."""

    requests: int
    to_last_connection: float
    errors: list[str] = field(default_factory=list)


def _run_round(threads: int, connect: Callable[[], Any]) -> tuple[float, list[str]]:
    """Release ``threads`` threads at once; return seconds to the last connection and errors."""
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    starts: list[float] = []
    ends: list[float] = []
    errors: list[str] = []
    connections: list[Any] = []
    all_done = threading.Event()

    def worker() -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            connection = connect()
        except Exception as exc:  # report every failure, keep the other threads going
            with lock:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return
        finished = time.perf_counter()
        with lock:
            starts.append(started)
            ends.append(finished)
            connections.append(connection)
        all_done.wait()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    while True:
        with lock:
            if len(ends) + len(errors) == threads:
                break
        time.sleep(0.01)
    all_done.set()
    for thread in workers:
        thread.join(timeout=60)
    for connection in connections:
        connection.close()

    elapsed = max(ends) - min(starts) if ends else float("nan")
    return elapsed, errors


def _securemysql_connect(info: SandboxInfo) -> Callable[[], Any]:
    """Return a new factory: empty token cache, DefaultAzureCredential created on first use."""
    import securemysql

    return securemysql.ConnectionFactory(
        info.host, info.user, port=info.port, database=info.database, ssl_ca=info.ssl_ca
    )


def _naive_connect(info: SandboxInfo) -> Callable[[], Any]:
    """Return the naive pattern: a new credential and a new token for every connection."""
    import pymysql
    from azure.identity import ManagedIdentityCredential

    context = ssl.create_default_context(cafile=info.ssl_ca)

    def connect() -> Any:
        credential = ManagedIdentityCredential()
        try:
            token = credential.get_token(SCOPE_PUBLIC).token
        finally:
            credential.close()
        return pymysql.connect(
            host=info.host,
            port=info.port,
            user=info.user,
            password=token,
            database=info.database,
            ssl=context,
        )

    return connect


VARIANTS: dict[str, Callable[[SandboxInfo], Callable[[], Any]]] = {
    "securemysql (one shared ConnectionFactory)": _securemysql_connect,
    "naive (ManagedIdentityCredential().get_token per connection)": _naive_connect,
}


def run_variant(
    sandbox: Sandbox, build: Callable[[SandboxInfo], Callable[[], Any]], threads: int
) -> Round:
    connect = build(sandbox.info)
    sandbox.identity.reset_counts()
    elapsed, errors = _run_round(threads, connect)
    return Round(sandbox.identity.request_count, elapsed, errors)


def _summary(name: str, rounds: Sequence[Round]) -> str:
    requests = [result.requests for result in rounds]
    times = [result.to_last_connection for result in rounds]
    times = [elapsed for elapsed in times if not math.isnan(elapsed)]
    errors = sum(len(result.errors) for result in rounds)
    median = f"{statistics.median(times) * 1000:.0f} ms" if times else "n/a"
    spread = f" (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})" if times else ""
    return (
        f"{name}: identity endpoint requests per round {requests}; time to the last connection "
        f"median {median}{spread} over {len(rounds)} rounds; failed connections {errors}"
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=64, help="threads per round (default 64)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (default 7)")
    parser.add_argument(
        "--endpoint-delay",
        type=float,
        default=0.0,
        help="seconds the identity endpoint waits before each response (default 0: no delay)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    results: dict[str, list[Round]] = {name: [] for name in VARIANTS}
    with Sandbox() as sandbox, sandbox.environment():
        if args.endpoint_delay > 0:
            sandbox.identity.inject_fault(Fault.DELAY, delay=args.endpoint_delay)
        for build in VARIANTS.values():  # warm-up: imports, first TLS handshakes
            run_variant(sandbox, build, min(args.threads, 4))
        for _ in range(args.rounds):
            for name, build in VARIANTS.items():
                results[name].append(run_variant(sandbox, build, args.threads))

    lines = [f"{args.threads} threads released together; endpoint delay {args.endpoint_delay} s"]
    lines.extend(_summary(name, rounds) for name, rounds in results.items())
    first_errors = [error for rounds in results.values() for r in rounds for error in r.errors]
    lines.extend(f"error: {error}" for error in sorted(set(first_errors))[:5])
    append_record("Cold start: concurrent first connections with an empty token cache", lines)


if __name__ == "__main__":
    main()
