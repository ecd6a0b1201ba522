"""The running haproxy: its command line, `haproxy -c` on the live set, and hitless reloads
through the master CLI (`reload`, then wait until `show proc` reports the outcome).

What entrypoint.sh and rhgen-reload used to do in shell: the paths come from the settings,
so haproxy, the check and the reload always name the same files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from typing import Any

from . import check, files, lock
from .errors import ApplyError, ReloadError

log = logging.getLogger(__name__)

MASTER_TRIES = 50  # the master CLI refuses connections while the master re-executes itself
MASTER_RETRY_SECONDS = 0.1


def haproxy_argv(settings: Any) -> list[str]:
    """haproxy in master-worker mode (-W: a reload hands the listening sockets to the new worker),
    its master CLI (-S), in the foreground with logs on stdout (-db)."""
    return [
        settings.haproxy_bin, "-W", "-db", "-S", f"{settings.haproxy_master_socket},mode,600",
        "-f", settings.haproxy_config, "-f", settings.haproxy_backend_config,
    ]


def watched_files(settings: Any) -> list[str]:
    """The files whose change means a reload: those haproxy loads, and the generation marker rhgen
    rewrites after every swap (a renewed certificate in a folder changes only crt-list.txt)."""
    return [
        settings.haproxy_config, settings.haproxy_backend_config, settings.haproxy_domain_map,
        settings.haproxy_ssl_cert, lock.generation_path(settings.haproxy_backend_config),
    ]


def fingerprint(settings: Any) -> str:
    """A digest of every watched file (missing ones count as missing)."""
    digest = hashlib.sha256()
    for path in watched_files(settings):
        content = files.read_live(path)
        digest.update(b"missing" if content is None else hashlib.sha256(content).digest())
    return digest.hexdigest()


def loaded_marker(settings: Any) -> str:
    """Beside the master socket: the fingerprint of the files haproxy was started with, so the file
    watcher, started after haproxy, reloads for a change it did not see happen."""
    return f"{settings.haproxy_master_socket}.rhgen-loaded"


def prepare_start(settings: Any) -> None:
    """Before haproxy starts: its socket folder exists, and the loaded marker says what it loads."""
    folder = os.path.dirname(settings.haproxy_master_socket)
    try:
        os.makedirs(folder, exist_ok=True)
        files.write_atomically(loaded_marker(settings), fingerprint(settings).encode())
    except OSError as exc:
        raise ApplyError(f"{folder}: cannot prepare haproxy's master socket folder ({exc.strerror})") from None


def read_loaded(settings: Any) -> str | None:
    content = files.read_live(loaded_marker(settings))
    return content.decode() if content else None


def check_live(settings: Any) -> None:
    """`haproxy -c` on the files in service; raise CheckError (or ApplyError when they are missing)."""
    missing = [p for p in (settings.haproxy_config, settings.haproxy_backend_config) if not os.path.isfile(p)]
    if missing:
        raise ApplyError(f"no configuration yet ({', '.join(missing)})")
    check.haproxy_check(settings.haproxy_bin, settings.haproxy_config, settings.haproxy_backend_config,
                        settings.haproxy_config)


def master_command(path: str, command: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the master answers, then closes
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def master_state(path: str) -> tuple[int, int] | None:
    """(reloads, failed) from the master's line of `show proc`
    ("<pid> master <reloads> [failed: <n>] <uptime> <version>"); None when no master answers."""
    try:
        answer = master_command(path, "show proc")
    except OSError:
        return None
    for line in answer.splitlines():
        words = line.split()
        if len(words) > 4 and words[1] == "master" and words[2].isdigit():
            failed = words[4].rstrip("]")
            return int(words[2]), int(failed) if failed.isdigit() else 0
    return None


def reload(settings: Any) -> None:
    """Check the live files, ask the master to reload, wait until it reports the outcome.
    Raise CheckError (never sent to haproxy) or ReloadError (the previous worker keeps serving)."""
    check_live(settings)
    path = settings.haproxy_master_socket
    for _ in range(MASTER_TRIES):
        before = master_state(path)
        if before is not None:
            try:
                master_command(path, "reload")
                break
            except OSError:
                pass
        time.sleep(MASTER_RETRY_SECONDS)
    else:
        raise ReloadError(f"no haproxy master answers on {path} (HAPROXY_MASTER_SOCKET)")
    deadline = time.monotonic() + settings.reload_timeout
    while time.monotonic() < deadline:
        state = master_state(path)
        if state is not None and state[0] > before[0]:
            if state[1] == 0:
                return
            raise ReloadError("haproxy could not load the new configuration (its log says why); "
                              "the previous worker keeps serving")
        time.sleep(MASTER_RETRY_SECONDS)
    raise ReloadError(f"the haproxy master did not report the reload within {settings.reload_timeout:g} s")


def reload_locked(settings: Any) -> None:
    """A reload of files another process writes (the sidekick layout): read and checked under a
    shared hold on rhgen's lock, so never half of a swap."""
    with lock.shared_lock(settings.haproxy_backend_config):
        reload(settings)

