"""Sandbox login cost: token users (PAM + verifier) against native-password users, over TLS.

Run as root from the repository: ``.venv/bin/python bench/login_cost.py [--logins N]``.
Each round opens one connection of each kind with PyMySQL and the same SSLContext,
interleaved so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import time

import pymysql

from bench.report import append_record, summary_ms
from securemysql.sandbox import Sandbox, SandboxInfo


def _timed_login(info: SandboxInfo, user: str, password: str, context: ssl.SSLContext) -> float:
    started = time.perf_counter()
    connection = pymysql.connect(
        host=info.host, port=info.port, user=user, password=password, ssl=context
    )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=300, help="logins of each kind (default 300)")
    args = parser.parse_args()

    with Sandbox() as sandbox:
        info = sandbox.info
        context = ssl.create_default_context(cafile=info.ssl_ca)
        token = sandbox.mint_token()
        token_times: list[float] = []
        native_times: list[float] = []
        for _ in range(10):  # warm-up: first TLS handshakes, page cache
            _timed_login(info, info.user, token, context)
        for _ in range(args.logins):
            token_times.append(_timed_login(info, info.user, token, context))
            native_times.append(_timed_login(info, info.native_user, info.native_password, context))
        accepted = sandbox.verifier.accepted

    append_record(
        "Sandbox login cost over TLS (PyMySQL)",
        [
            f"Token user (mysql_clear_password -> PAM -> verifier): {summary_ms(token_times)}",
            f"Native-password user: {summary_ms(native_times)}",
            "Token validation cost (difference of the medians): "
            f"{(statistics.median(token_times) - statistics.median(native_times)) * 1000:.2f} ms",
            f"Verifier accepted {accepted} logins",
        ],
    )


if __name__ == "__main__":
    main()
