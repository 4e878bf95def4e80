"""``securemysql sandbox up|down|status``: the sandbox as a background process.

``up`` starts ``python -m securemysql.sandbox.daemon`` in a new session, waits
until it has written the sandbox's details to the state file, and prints them.
The background process keeps the sandbox running until it gets SIGTERM from
``down`` (or SIGINT), then stops every component and removes the state file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from securemysql.sandbox.errors import SandboxError

_READY_TIMEOUT_SECONDS = 90.0
_STOP_TIMEOUT_SECONDS = 60.0


def default_state_file() -> Path:
    """Return the per-user state file path in the temporary directory."""
    return Path(tempfile.gettempdir()) / f"securemysql-sandbox-{os.getuid()}.json"


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state_file) if getattr(args, "state_file", None) else default_state_file()


def _read_state(path: Path) -> Optional[dict[str, Any]]:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if _process_alive(int(state.get("pid", 0))) else None


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print_info(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(state, indent=2, sort_keys=True))
        return
    print(f"Sandbox running (pid {state['pid']}) on {state['host']}:{state['port']}")
    print(f"  user      {state['user']}  (token user; logs in with mysql_clear_password)")
    print(f"  database  {state['database']}")
    print(f"  ssl_ca    {state['ssl_ca']}")
    print("  environment for azure-identity:")
    for name, value in sorted(state["env"].items()):
        print(f"    export {name}={value}")
    print("Stop it with: securemysql sandbox down")


def command_up(args: argparse.Namespace) -> int:
    """Start the background sandbox (or report the running one) and print its details."""
    path = _state_path(args)
    if args.foreground:
        return serve(
            path, _sandbox_options(args), as_json=args.json, export_directory=args.export_dir
        )
    running = _read_state(path)
    if running is not None:
        print(f"A sandbox is already running (pid {running['pid']}).", file=sys.stderr)
        _print_info(running, args.json)
        return 0

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log_path = path.with_suffix(".log")
    command = [sys.executable, "-m", "securemysql.sandbox.daemon", "--state-file", str(path)]
    command += _option_arguments(args)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )

    state = _wait_for_state(path, process, log_path)
    _print_info(state, args.json)
    print(f"Sandbox log (rejected logins and their reasons): {log_path}", file=sys.stderr)
    return 0


def _wait_for_state(path: Path, process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = _read_state(path)
        if state is not None:
            return state
        if process.poll() is not None:
            raise SandboxError(
                f"the sandbox process exited with code {process.returncode} before it was "
                f"ready; see {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.1)
    process.terminate()
    raise SandboxError(
        f"the sandbox was not ready within {_READY_TIMEOUT_SECONDS:.0f} s; see {log_path}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def command_down(args: argparse.Namespace) -> int:
    """Stop the background sandbox and wait until it has cleaned up."""
    path = _state_path(args)
    state = _read_state(path)
    if state is None:
        print("No sandbox is running.", file=sys.stderr)
        return 0

    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _process_alive(pid):
        print(f"The sandbox (pid {pid}) did not stop within 60 s.", file=sys.stderr)
        return 1
    print(f"Sandbox (pid {pid}) stopped.")
    return 0


def command_status(args: argparse.Namespace) -> int:
    state = _read_state(_state_path(args))
    if state is None:
        print("No sandbox is running.", file=sys.stderr)
        return 3
    _print_info(state, True)
    return 0


def add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that configure a sandbox to ``parser``."""
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of tokens from the identity endpoint, in seconds (default: 3600)",
    )
    parser.add_argument(
        "--tls",
        default="verified",
        choices=["verified", "none", "wrong_host", "untrusted"],
        help="what the server offers on TLS (default: verified)",
    )
    parser.add_argument("--port", type=int, help="server TCP port (default: a free port)")
    parser.add_argument(
        "--identity-port", type=int, help="identity endpoint TCP port (default: a free port)"
    )
    parser.add_argument(
        "--bind-address",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; use 0.0.0.0 only inside a container)",
    )


def _sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tls": args.tls,
        "token_lifetime": args.token_lifetime,
        "port": args.port,
        "identity_port": args.identity_port,
        "bind_address": args.bind_address,
    }


def _option_arguments(args: argparse.Namespace) -> list[str]:
    arguments = ["--token-lifetime", str(args.token_lifetime), "--tls", args.tls]
    arguments += ["--bind-address", args.bind_address]
    if args.port is not None:
        arguments += ["--port", str(args.port)]
    if args.identity_port is not None:
        arguments += ["--identity-port", str(args.identity_port)]
    return arguments


def serve(
    state_file: Path,
    options: dict[str, Any],
    *,
    as_json: bool = False,
    export_directory: Optional[str] = None,
) -> int:
    """Run a sandbox until SIGTERM or SIGINT; write its details to ``state_file`` when ready.

    ``export_directory`` receives a copy of the CA certificate and the details as
    ``sandbox.json``, for a container that shares that directory with its host.
    """
    from securemysql.sandbox.core import Sandbox

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    with Sandbox(**options) as sandbox:
        state = sandbox.info.to_json_dict()
        _write_private_json(state_file, state)
        if export_directory is not None:
            _export(Path(export_directory), state)
        if as_json:
            print(json.dumps(state, indent=2, sort_keys=True), flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                state_file.unlink()
    return 0


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def _export(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state["ssl_ca"], directory / "ca.pem")
    exported = {**state, "ssl_ca": str(directory / "ca.pem")}
    (directory / "sandbox.json").write_text(json.dumps(exported, indent=2, sort_keys=True))


def main() -> int:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m securemysql.sandbox.daemon")
    parser.add_argument("--state-file", required=True)
    add_sandbox_options(parser)
    args = parser.parse_args()
    return serve(Path(args.state_file), _sandbox_options(args))


if __name__ == "__main__":
    sys.exit(main())
