"""Token churn: sustained connection rate while access tokens live only 60 s.

Run as root from the repository: ``.venv/bin/python -m bench.token_churn``.

The sandbox's identity endpoint issues tokens that expire after
``--token-lifetime`` seconds (default 60). ``--threads`` threads share one
``ConnectionFactory`` and, for ``--seconds`` (default 300), open a connection,
run ``SELECT 1`` and close it, as fast as they can.

Reported: connections per second over the whole run, and the slowest and
fastest ``--bucket`` interval (a sustained rate has both close to the mean);
failed connections; identity endpoint requests; and logins that the server's
token verifier rejected. The token provider refreshes each token once, about
45 s into its 60 s life, so about ``seconds / 45 + 1`` requests are expected.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from collections.abc import Sequence

import securemysql
from bench.report import append_record
from securemysql.sandbox import Sandbox


class ChurnCounter:
    """Thread-safe count of connections per time bucket, and of failures by type."""

    def __init__(self, started: float, bucket_seconds: float) -> None:
        self._started = started
        self._bucket_seconds = bucket_seconds
        self._lock = threading.Lock()
        self.buckets: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()

    def record_connection(self) -> None:
        bucket = int((time.monotonic() - self._started) // self._bucket_seconds)
        with self._lock:
            self.buckets[bucket] += 1

    def record_failure(self, exc: Exception) -> None:
        with self._lock:
            self.failures[type(exc).__name__] += 1


def _churn(factory: securemysql.ConnectionFactory, counter: ChurnCounter, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        try:
            connection = factory()
            try:
                cursor = connection.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                connection.close()
        except Exception as exc:  # counted and reported; the run goes on
            counter.record_failure(exc)
            continue
        counter.record_connection()


def run(sandbox: Sandbox, args: argparse.Namespace) -> list[str]:
    """Run the churn and return the result lines."""
    info = sandbox.info
    factory = securemysql.ConnectionFactory(
        info.host, info.user, port=info.port, database=info.database, ssl_ca=info.ssl_ca
    )
    sandbox.identity.reset_counts()
    rejections_before = len(sandbox.verifier.rejections)

    started = time.monotonic()
    counter = ChurnCounter(started, args.bucket)
    threads = [
        threading.Thread(target=_churn, args=(factory, counter, started + args.seconds))
        for _ in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    full_buckets = [counter.buckets[index] for index in range(int(args.seconds // args.bucket))]
    rates = [count / args.bucket for count in full_buckets] or [0.0]
    total = sum(counter.buckets.values())
    expected = int(args.seconds // (0.75 * args.token_lifetime)) + 1
    return [
        f"{args.threads} threads for {elapsed:.0f} s, token lifetime {args.token_lifetime:.0f} s",
        f"Connections: {total} ({total / elapsed:.1f} per second); per {args.bucket:.0f} s "
        f"interval min {min(rates):.1f}/s, max {max(rates):.1f}/s",
        f"Failed connections: {sum(counter.failures.values())} {dict(counter.failures)}",
        f"Identity endpoint requests: {sandbox.identity.request_count} "
        f"(by HTTP status {sandbox.identity.status_counts()}; about {expected} expected)",
        f"Token provider fetches: {factory.tokens.fetch_count}",
        f"Logins rejected by the token verifier: "
        f"{len(sandbox.verifier.rejections) - rejections_before}",
    ]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="run time (default 300)")
    parser.add_argument("--threads", type=int, default=4, help="connecting threads (default 4)")
    parser.add_argument(
        "--token-lifetime", type=float, default=60.0, help="token lifetime, seconds (default 60)"
    )
    parser.add_argument(
        "--bucket", type=float, default=30.0, help="interval for min/max rates, s (default 30)"
    )
    args = parser.parse_args(argv)
    args.bucket = min(args.bucket, args.seconds)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    with Sandbox(token_lifetime=args.token_lifetime) as sandbox, sandbox.environment():
        lines = run(sandbox, args)
    append_record("Token churn: connection rate with short-lived tokens", lines)


if __name__ == "__main__":
    main()
