"""The ``securemysql check`` and ``securemysql token`` subcommands: options, help and handlers.

Importing this module imports only argparse and the check's data model, so
that ``securemysql --help`` stays fast; the stages are imported when a
command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import Optional

from securemysql.check.model import (
    EXIT_USAGE,
    STAGES,
    TOKEN,
    CheckOptions,
)

DRIVERS = ("pymysql", "mysql.connector")

#: Option destination -> environment variable read when the option is not given.
ENVIRONMENT_VARIABLES: Mapping[str, str] = {
    "host": "SECUREMYSQL_HOST",
    "port": "SECUREMYSQL_PORT",
    "user": "SECUREMYSQL_USER",
    "database": "SECUREMYSQL_DATABASE",
    "driver": "SECUREMYSQL_DRIVER",
    "ssl_ca": "SECUREMYSQL_SSL_CA",
    "client_id": "SECUREMYSQL_CLIENT_ID",
    "scope": "SECUREMYSQL_SCOPE",
    "timeout": "SECUREMYSQL_TIMEOUT",
    "json": "SECUREMYSQL_JSON",
    "strict": "SECUREMYSQL_STRICT",
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

_CHECK_DESCRIPTION = """\
Diagnose a connection to Azure Database for MySQL stage by stage: name
resolution, TCP connect, TLS (certificate chain and host name verified),
access token, authentication with the token, session, and the server's
security posture. The run stops at the first failed stage and reports what
it learned, with the cause and the fix. The access token itself is never
printed.

Every option can also be set through the environment variable shown in its
help; the command line wins."""

_TOKEN_DESCRIPTION = """\
Print a Microsoft Entra ID access token for Azure Database for MySQL on
standard output, for the mysql and mariadb command-line clients. The token is
a secret: a warning on standard error says so, and nothing else is printed on
standard output."""

_TOKEN_EPILOG = """\
The token is the password. Pass it through the MYSQL_PWD environment variable
rather than --password=, which other users can read in the process list
(MariaDB's 10.11 client reads MYSQL_PWD):

  MYSQL_PWD="$(securemysql token --host myserver.mysql.database.azure.com)" \\
    mariadb --host myserver.mysql.database.azure.com --user my-app-identity \\
      --enable-cleartext-plugin \\
      --ssl-ca /path/to/ca-bundle.pem --ssl-verify-server-cert

  (`securemysql ca-bundle --output ca-bundle.pem` writes the CA bundle that
  securemysql trusts by default.)

  --enable-cleartext-plugin   lets the client send the token with the
                              mysql_clear_password auth plugin (MySQL's client
                              needs it; MariaDB's 10.11 client accepts it and
                              warns that it is obsolete)
  --ssl-ca FILE               PEM file of the CA certificates that issued the
                              server certificate
  --ssl-verify-server-cert    verify the certificate chain and host name, so
                              the token reaches only the real server (MySQL's
                              8.0+ client removed this option: use
                              --ssl-mode=VERIFY_IDENTITY instead)

Without certificate verification the client would send the token to any host
that intercepts the connection. The server checks the token at login only, so
a session stays open after the token expires.

Exit codes: 0 token printed; 2 invalid options; 13 no access token.
Environment: SECUREMYSQL_SCOPE, SECUREMYSQL_CLIENT_ID, SECUREMYSQL_HOST,
SECUREMYSQL_TIMEOUT."""


class UsageError(Exception):
    """An option value is invalid; the message names the option and the fix."""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``check`` and ``token`` subcommands on the CLI's subparsers."""
    _add_check_command(subparsers)
    _add_token_command(subparsers)


def _environment_help(destination: str) -> str:
    return f"(env {ENVIRONMENT_VARIABLES[destination]})"


def _default(destination: str) -> Optional[str]:
    value = os.environ.get(ENVIRONMENT_VARIABLES[destination])
    return value if value else None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port must be from 1 to 65535, got {port}")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"timeout must be a number of seconds, got {text!r}"
        ) from None
    if not 0 < seconds < 3600:
        raise argparse.ArgumentTypeError(f"timeout must be above 0 and below 3600 s, got {text}")
    return seconds


def _driver(text: str) -> str:
    name = text.strip().lower()
    if name not in DRIVERS:
        raise argparse.ArgumentTypeError(
            f"driver must be one of {', '.join(DRIVERS)}, got {text!r}"
        )
    return name


def _exit_code_table() -> str:
    rows = [
        "  0   all stages passed (posture failures are warnings without --strict)",
        "  1   unexpected internal error",
        "  2   invalid options, or the driver cannot be imported",
    ]
    for spec in STAGES:
        note = " (only with --strict)" if spec.name == "posture" else ""
        rows.append(f"  {spec.exit_code}  stage {spec.number} failed: {spec.title}{note}")
    return "\n".join(rows)


def _environment_table() -> str:
    return textwrap.fill(
        ", ".join(ENVIRONMENT_VARIABLES.values()),
        width=78,
        initial_indent="  ",
        subsequent_indent="  ",
    )


def _add_check_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser(
        "check",
        help="diagnose a connection stage by stage (DNS, TCP, TLS, token, login, posture)",
        description=_CHECK_DESCRIPTION,
        epilog=(
            f"exit codes:\n{_exit_code_table()}\n\n"
            f"environment variables:\n{_environment_table()}\n"
            f"  Boolean variables take 1/true/yes/on or 0/false/no/off."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    # An option whose variable is set is no longer required on the command line.
    host = _default("host")
    user = _default("user")
    check.add_argument(
        "--host",
        default=host,
        required=host is None,
        help=f"server host name or IP address {_environment_help('host')}",
    )
    check.add_argument(
        "--port",
        type=_port,
        default=_default("port") or "3306",
        help=f"TCP port (default: 3306) {_environment_help('port')}",
    )
    check.add_argument(
        "--user",
        default=user,
        required=user is None,
        help=f"MySQL user name created for the Entra identity {_environment_help('user')}",
    )
    check.add_argument(
        "--database",
        default=_default("database"),
        help=f"database to open (default: none) {_environment_help('database')}",
    )
    check.add_argument(
        "--driver",
        type=_driver,
        default=_default("driver") or "pymysql",
        help=f"database driver: {' or '.join(DRIVERS)} (default: pymysql) "
        f"{_environment_help('driver')}",
    )

    _add_token_options(
        check, timeout_help="seconds allowed for each network step and for the token request"
    )
    check.add_argument(
        "--ssl-ca",
        default=_default("ssl_ca"),
        metavar="FILE",
        help="PEM file of the CA certificates to trust (default: certifi plus the Azure "
        f"Database for MySQL root CAs) {_environment_help('ssl_ca')}",
    )

    # Flags default to None, so that the handler can tell "not given" from "off"
    # and fall back to the environment variable.
    check.add_argument(
        "--json",
        action="store_true",
        default=None,
        help=f"print one JSON document (schema_version 1) {_environment_help('json')}",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help=f"fail the run (exit code 16) when a posture item fails {_environment_help('strict')}",
    )

    check.set_defaults(handler=_run_check_command)


def _add_token_options(parser: argparse.ArgumentParser, *, timeout_help: str) -> None:
    parser.add_argument(
        "--client-id",
        default=_default("client_id"),
        metavar="ID",
        help=f"client ID of a user-assigned managed identity {_environment_help('client_id')}",
    )
    parser.add_argument(
        "--scope",
        default=_default("scope"),
        metavar="S",
        help="scope to request the token for (default: from the host name's cloud, else "
        f"the public cloud) {_environment_help('scope')}",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=_default("timeout") or "10",
        metavar="SECONDS",
        help=f"{timeout_help} (default: 10) {_environment_help('timeout')}",
    )


def _add_token_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = subparsers.add_parser(
        "token",
        help="print an access token for the mysql and mariadb command-line clients",
        description=_TOKEN_DESCRIPTION,
        epilog=_TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_token_options(token, timeout_help="seconds allowed for the token request")
    token.add_argument(
        "--host",
        default=_default("host"),
        help="server host name; its suffix selects the cloud when --scope is not given "
        f"{_environment_help('host')}",
    )
    token.set_defaults(handler=_run_token_command)


# --- Handlers -------------------------------------------------------------------------------


def _flag(args: argparse.Namespace, destination: str) -> bool:
    from_command_line: Optional[bool] = getattr(args, destination)
    if from_command_line is not None:
        return from_command_line

    variable = ENVIRONMENT_VARIABLES[destination]
    value = os.environ.get(variable, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(
        f"{variable} must be one of 1, true, yes, on, 0, false, no, off; got {value!r}"
    )


def check_options(args: argparse.Namespace) -> CheckOptions:
    """Build and validate the check's options from parsed arguments.

    Raises:
        UsageError: an option is invalid, the CA file cannot be loaded, or the
            driver cannot be imported.
    """
    from securemysql.errors import ConfigurationError
    from securemysql.tls import TLSConfig

    if not args.host.strip():
        raise UsageError("--host must not be empty")
    if not args.user.strip():
        raise UsageError("--user must not be empty")
    if args.scope is not None and not args.scope.strip():
        raise UsageError("--scope must not be empty; omit it to derive the scope from --host")

    try:
        TLSConfig(ca_file=args.ssl_ca)
    except ConfigurationError as exc:
        raise UsageError(f"--ssl-ca: {exc}") from None

    _require_driver(args.driver)
    return CheckOptions(
        host=args.host.strip(),
        port=args.port,
        user=args.user.strip(),
        database=args.database or None,
        driver=args.driver,
        ssl_ca=args.ssl_ca,
        client_id=args.client_id or None,
        scope=args.scope.strip() if args.scope else None,
        timeout=args.timeout,
        strict=_flag(args, "strict"),
    )


def _require_driver(name: str) -> None:
    from securemysql.drivers import load_driver

    try:
        load_driver(name)
    except ImportError as exc:
        raise UsageError(
            f"--driver {name} cannot be used: {exc}. Install the driver, or pick another one."
        ) from None


def _run_check_command(args: argparse.Namespace) -> int:
    from securemysql.check.report import render_json, render_text, use_colour
    from securemysql.check.runner import run_check

    try:
        options = check_options(args)
        as_json = _flag(args, "json")
    except UsageError as exc:
        print(f"securemysql check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    report = run_check(options)
    if as_json:
        sys.stdout.write(render_json(report))
    else:
        sys.stdout.write(render_text(report, colour=use_colour(sys.stdout)))
    sys.stdout.flush()
    return report.exit_code


def _run_token_command(args: argparse.Namespace) -> int:
    from securemysql.errors import ConfigurationError, TokenError
    from securemysql.tokens import TokenProvider

    try:
        provider = TokenProvider(
            scope=args.scope,
            host=args.host,
            managed_identity_client_id=args.client_id,
            timeout=args.timeout,
        )
    except ConfigurationError as exc:
        print(f"securemysql token: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    with provider:
        try:
            token = provider.get_token()
        except TokenError as exc:
            print(f"securemysql token: no access token: {exc}", file=sys.stderr)
            return TOKEN.exit_code

    print(
        "securemysql token: standard output holds an access token. It is a secret that "
        f"grants database access as {token.identity} until it expires; do not log, paste "
        "or commit it.",
        file=sys.stderr,
    )
    sys.stdout.write(token.token + "\n")
    sys.stdout.flush()
    return 0
