"""The PAM service that sends sandbox logins to the token verifier.

MariaDB's PAM plugin looks the service up in ``/etc/pam.d``, so creating it
needs root. Each sandbox gets its own service, named with the process id so
that services left by a killed process can be recognised and removed.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from pathlib import Path

from securemysql.sandbox.errors import SandboxError

logger = logging.getLogger("securemysql.sandbox.pam")

PAM_DIRECTORY = Path("/etc/pam.d")
SERVICE_PREFIX = "securemysql-sandbox-"
_PAM_SCRIPT_MODULE_DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu/security",
    "/usr/lib/aarch64-linux-gnu/security",
    "/lib/x86_64-linux-gnu/security",
    "/lib/aarch64-linux-gnu/security",
    "/usr/lib/security",
    "/lib/security",
    "/usr/lib64/security",
)


def check_prerequisites() -> None:
    """Raise SandboxError naming the fix when PAM set-up is impossible here."""
    if not any(Path(directory, "pam_script.so").exists() for directory in _all_module_dirs()):
        raise SandboxError(
            "The PAM module pam_script.so is missing. Install it with: "
            "apt-get update && apt-get install -y libpam-script"
        )
    if not os.access(PAM_DIRECTORY, os.W_OK):
        raise SandboxError(
            f"Creating a PAM service in {PAM_DIRECTORY} needs root, and this process "
            f"(uid {os.geteuid()}) cannot write there. Run the sandbox as root, for example: "
            'sudo "$(command -v securemysql)" sandbox up'
        )


def _all_module_dirs() -> list[str]:
    found = glob.glob("/usr/lib/*/security") + glob.glob("/lib/*/security")
    return list(dict.fromkeys([*_PAM_SCRIPT_MODULE_DIRECTORIES, *found]))


def service_text(script_directory: Path | str, verifier_port: int, verifier_host: str) -> str:
    """Return the PAM service definition that runs ``pam_script_auth`` for every login."""
    return (
        "# Created by securemysql's sandbox.\n"
        f"auth required pam_script.so dir={script_directory} "
        f"verifier_host={verifier_host} verifier_port={verifier_port}\n"
        "account required pam_permit.so\n"
    )


def create_service(
    name: str, script_directory: Path, verifier_port: int, verifier_host: str = "127.0.0.1"
) -> Path:
    """Write ``/etc/pam.d/<name>``; the sandbox removes it when it stops."""
    path = PAM_DIRECTORY / name
    path.write_text(service_text(script_directory, verifier_port, verifier_host))
    os.chmod(path, 0o644)
    return path


def remove_service(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (PAM_DIRECTORY / name).unlink()


def remove_stale_services() -> None:
    """Remove services left by sandbox processes that no longer exist."""
    for path in PAM_DIRECTORY.glob(f"{SERVICE_PREFIX}*"):
        pid_text = path.name[len(SERVICE_PREFIX) :].split("-")[0]
        if pid_text.isdigit() and not _process_exists(int(pid_text)):
            logger.info("removing stale PAM service %s", path)
            with contextlib.suppress(OSError):
                path.unlink()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
