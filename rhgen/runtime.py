"""Reload-free stage: a change that touches only the host map goes to the running HAProxy through
its runtime API (the admin stats socket, HAPROXY_STATS_SOCKET) instead of a reload.

The map file on disk is written first, as always, so the next reload loads the same entries.
The live map is then replaced atomically: `prepare map <file>` opens a new, empty version,
`add map @<ver> <file> <<` fills it in chunks, `commit map @<ver> <file>` swaps it in, and
`show map <file>` proves the result. Any failure raises RuntimeApiError and the caller
reloads instead; a reload is always correct, this is only faster and keeps connections.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import RuntimeApiError

if TYPE_CHECKING:
    from .render import OutputFile

log = logging.getLogger(__name__)

TIMEOUT = 5.0
# A CLI payload must fit HAProxy's buffer (tune.bufsize, 16 kB by default); larger ones are dropped silently.
CHUNK_BYTES = 8000
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def send(socket_path: str, command: str, timeout: float = TIMEOUT) -> str:
    """One command on a fresh connection (non-interactive mode: HAProxy answers, then closes)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(command.encode("utf-8") + b"\n")
            chunks, size = [], 0
            while chunk := sock.recv(65536):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise RuntimeApiError(f"stats socket {socket_path}: answer over {MAX_ANSWER_BYTES} bytes")
                chunks.append(chunk)
    except FileNotFoundError:
        raise RuntimeApiError(f"stats socket {socket_path} does not exist (is haproxy running with it?)") from None
    except TimeoutError:
        raise RuntimeApiError(f"stats socket {socket_path}: no answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise RuntimeApiError(f"stats socket {socket_path}: {exc.strerror or exc}") from None
    return b"".join(chunks).decode("utf-8", "replace")


def map_entries(content: bytes) -> list[tuple[str, str]]:
    """The (key, value) pairs HAProxy loads from a map file: blank lines and # comments skipped,
    the key is the first word, the value the rest of the line."""
    entries = []
    for raw in content.decode("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("\t", " ").partition(" ")
        entries.append((key, value.strip()))
    return entries


def _check_silent(answer: str, command: str) -> None:
    """add/commit answer an empty line on success, a message on failure, nothing when dropped."""
    if answer.strip() or not answer:
        detail = answer.strip().splitlines()[0] if answer.strip() else "no answer (payload too large?)"
        raise RuntimeApiError(f"runtime API `{command}`: {detail}")


def replace_map(socket_path: str, map_path: str, entries: Sequence[tuple[str, str]]) -> None:
    """Atomically make the live map `map_path` hold exactly `entries`; raise RuntimeApiError otherwise."""
    for key, value in entries:
        if not key or not value or re.search(r"[\s;<>]", key + value) or "\\" in key + value:
            raise RuntimeApiError(f"map entry {key!r} {value!r} cannot be sent through the runtime API")
    answer = send(socket_path, f"prepare map {map_path}")
    found = re.search(r"New version created: (\d+)", answer)
    if not found:
        raise RuntimeApiError(f"runtime API `prepare map {map_path}`: {answer.strip() or 'no answer'}")
    version = found.group(1)
    for chunk in _chunks([f"{key} {value}\n" for key, value in entries]):
        command = f"add map @{version} {map_path} <<\n{chunk}"
        _check_silent(send(socket_path, command), f"add map @{version} {map_path}")
    command = f"commit map @{version} {map_path}"
    _check_silent(send(socket_path, command), command)
    live = sorted(_shown_entries(send(socket_path, f"show map {map_path}")))
    if live != sorted(entries):
        raise RuntimeApiError(f"runtime API: {map_path} holds {len(live)} entries after the commit, expected {len(entries)}")


def _chunks(lines: Sequence[str]) -> list[str]:
    chunks, current = [], ""
    for line in lines:
        if current and len(current) + len(line) > CHUNK_BYTES:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return chunks


def _shown_entries(answer: str) -> list[tuple[str, str]]:
    """`show map <file>` lines are `<pointer> <key> <value>`."""
    entries = []
    for line in answer.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries.append((parts[1], parts[2]))
        elif line.strip():
            raise RuntimeApiError(f"runtime API `show map`: {line.strip()}")
    return entries


def apply_map_change(settings: Any, changed: Sequence[OutputFile]) -> bool:
    """True when HAPROXY_STATS_SOCKET is set, the host map is the only changed file and the
    running HAProxy took it through the runtime API; False means: reload as usual."""
    socket_path = settings.haproxy_stats_socket
    if not socket_path or [f.role for f in changed] != ["map"]:
        return False
    output = changed[0]
    try:
        replace_map(socket_path, output.path, map_entries(output.content))
    except RuntimeApiError as exc:
        log.warning("%s; reloading instead", exc)
        return False
    log.info("applied %s through the runtime API, no reload", output.path)
    return True


def repair_drift(settings: Any, map_path: str, content: bytes | None) -> bool:
    """Make the live map match the map file when they differ (a runtime update that reached a
    worker on its way out during a reload). True when something was repaired."""
    socket_path = settings.haproxy_stats_socket
    if not socket_path or content is None:
        return False
    wanted = sorted(map_entries(content))
    try:
        if sorted(_shown_entries(send(socket_path, f"show map {map_path}"))) == wanted:
            return False
        replace_map(socket_path, map_path, wanted)
    except RuntimeApiError as exc:
        log.info("live map check: %s", exc)
        return False
    log.warning("the live host map differed from %s; replaced it through the runtime API", map_path)
    return True
