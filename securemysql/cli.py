"""Command-line interface: ``securemysql demo``, ``sandbox``, ``check`` and ``token``.

Subcommands import their modules only when they run, so ``securemysql --help``
stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Callable, Optional

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _run_demo(args: argparse.Namespace) -> int:
    from securemysql.demo import run_demo

    return run_demo(driver=args.driver)


def _run_ca_bundle(args: argparse.Namespace) -> int:
    from securemysql.tls import default_ca_bundle_pem

    pem = default_ca_bundle_pem()
    if args.output is None:
        sys.stdout.write(pem)
        return EXIT_OK
    with open(args.output, "w", encoding="ascii") as output:
        output.write(pem)
    print(f"Wrote the default CA bundle to {args.output}", file=sys.stderr)
    return EXIT_OK


def _run_sandbox(args: argparse.Namespace) -> int:
    from securemysql.sandbox import daemon

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "up": daemon.command_up,
        "down": daemon.command_down,
        "status": daemon.command_status,
    }
    return handlers[args.sandbox_command](args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securemysql",
        description=(
            "Passwordless, TLS-verified connections to Azure Database for MySQL "
            "with Microsoft Entra ID access tokens."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: INFO, -vv: DEBUG)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="start the local sandbox, connect with a token over verified TLS, report, stop",
        description=(
            "Start the local Azure-like sandbox (needs root, MariaDB and libpam-script), obtain "
            "a token through azure-identity from its managed-identity endpoint, connect over "
            "verified TLS, show the authenticated user and the TLS version, and stop the sandbox."
        ),
    )
    demo.add_argument(
        "--driver",
        default="pymysql",
        choices=["pymysql", "mysql.connector"],
        help="database driver to use (default: pymysql)",
    )
    demo.set_defaults(handler=_run_demo)

    ca_bundle = commands.add_parser(
        "ca-bundle",
        help="print the default CA bundle (certifi plus the Azure Database for MySQL roots)",
        description=(
            "Print the CA bundle that securemysql trusts by default: certifi's bundle plus "
            "the Azure Database for MySQL root CAs it lacks. Give the file to other clients, "
            "for example: mariadb --ssl-ca FILE --ssl-verify-server-cert."
        ),
    )
    ca_bundle.add_argument(
        "--output", metavar="FILE", help="write the bundle to FILE instead of standard output"
    )
    ca_bundle.set_defaults(handler=_run_ca_bundle)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local Azure-like MariaDB sandbox in the background",
        description="Start, inspect and stop the local Azure-like sandbox.",
    )
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION")
    sandbox_commands.required = True
    up = sandbox_commands.add_parser(
        "up", help="start the sandbox in the background and print how to reach it"
    )
    up.add_argument("--json", action="store_true", help="print one JSON object")
    up.add_argument(
        "--foreground",
        action="store_true",
        help="run in this process until Ctrl-C or SIGTERM (for containers) instead of detaching",
    )
    up.add_argument(
        "--export-dir",
        metavar="DIR",
        help="with --foreground: copy the CA certificate and the details (sandbox.json) here",
    )
    _add_sandbox_options(up)
    for action in (up, sandbox_commands.add_parser("down", help="stop the sandbox")):
        action.add_argument(
            "--state-file",
            metavar="PATH",
            help="where the running sandbox is recorded (default: per user in the temp dir)",
        )
    status = sandbox_commands.add_parser("status", help="print the running sandbox as JSON")
    status.add_argument("--state-file", metavar="PATH")
    sandbox.set_defaults(handler=_run_sandbox)

    _add_optional_commands(commands)
    return parser


def _add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    from securemysql.sandbox.daemon import add_sandbox_options

    add_sandbox_options(parser)


def _add_optional_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check`` and ``token`` when their module is present."""
    try:
        from securemysql import check
    except ImportError:
        return
    check.add_commands(commands)


def _configure_logging(verbosity: int, command: str) -> None:
    from securemysql import redaction

    redaction.install()
    # The check report already states every warning the library would log.
    quiet = logging.ERROR if command == "check" else logging.WARNING
    level = quiet
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.command)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
