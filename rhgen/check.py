"""Check stage: `haproxy -c` on the complete new set before anything in service changes.

The set is rendered a second time for a private staging folder (plan.py), each file referring
to its staged siblings; this stage writes those files, runs haproxy on them and removes them.
A real run stages beside the live files, under the lock, so a run killed during the check
leaves its copy, private key included, where the next run removes it (lock.remove_stale_temps),
not in TMPDIR for good; a dry run, which takes no lock, stages in TMPDIR.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # noqa: S404 - argument lists only, never a shell  # nosec B404
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .errors import ApplyError, CheckError
from .files import reason

if TYPE_CHECKING:
    from .render import OutputFile

CHECK_PREFIX = ".rhgen-check-"  # the staged set haproxy -c reads
CHECK_TIMEOUT = 120


def staging_folder(parent: str) -> str:
    """A fresh name for a staging folder in `parent`; check_staged creates it (and fails if it exists)."""
    return os.path.join(parent, f"{CHECK_PREFIX}{os.urandom(6).hex()}")


def staged_paths(folder: str, roles: Sequence[str]) -> dict[str, str]:
    return {role: os.path.join(folder, role) for role in roles}


def check_staged(haproxy_bin: str, staged: Sequence[OutputFile]) -> None:
    """Write the staged set (every file in one folder that does not exist yet) and run haproxy -c on it."""
    paths = {output.role: output.path for output in staged}
    folder = os.path.dirname(paths["config"])
    try:
        os.mkdir(folder, 0o700)
    except OSError as exc:
        raise ApplyError(f"{folder}: cannot stage the new configuration for haproxy -c ({reason(exc)})") from None
    try:
        try:
            for output in staged:
                fd = os.open(output.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(output.content)
        except OSError as exc:
            raise ApplyError(f"{folder}: cannot stage the new configuration for haproxy -c ({reason(exc)})") from None
        haproxy_check(haproxy_bin, paths["config"], paths["backends"], "the new configuration", paths)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def haproxy_check(haproxy_bin: str, config: str, backends: str, what: str, names: Mapping[str, str] | None = None) -> None:
    """`haproxy -c` on config + backends; raise CheckError with haproxy's own lines, the paths of
    `names` (role -> path) shown as <new role>. The one place rhgen runs haproxy -c."""
    command = [haproxy_bin, "-c", "-f", config, "-f", backends]
    try:
        result = subprocess.run(  # noqa: S603 - an argument list, no shell; HAPROXY_BIN is the operator's own  # nosec B603
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise CheckError(f"haproxy binary {haproxy_bin!r} not found (install haproxy or set HAPROXY_BIN)") from None
    except PermissionError:
        raise CheckError(f"haproxy binary {haproxy_bin!r} is not executable (HAPROXY_BIN)") from None
    except subprocess.TimeoutExpired:
        raise CheckError(f"haproxy -c did not finish within {CHECK_TIMEOUT} s") from None
    if result.returncode != 0:
        lines = _haproxy_errors(result.stdout + result.stderr, names or {})
        raise CheckError(f"haproxy -c rejected {what}:\n" + "\n".join(lines))


def _haproxy_errors(output: str, staged: Mapping[str, str]) -> list[str]:
    lines = [line for line in output.splitlines() if "[ALERT]" in line or "[WARNING]" in line] or output.splitlines()
    shown = []
    for line in lines[:20]:
        for role, path in staged.items():
            line = line.replace(path, f"<new {role}>")
        shown.append("  " + line.strip())
    return shown
