"""Reload-free stage: a change that touches only the host map and the servers of existing backends
goes to the running HAProxy through its runtime API (the admin stats socket, HAPROXY_STATS_SOCKET)
instead of a reload.

The map file on disk is written first, as always, so the next reload loads the same entries.
The live map is then replaced atomically: `prepare map <file>` opens a new, empty version,
`add map @<ver> <file> <<` fills it in chunks, `commit map @<ver> <file>` swaps it in, and
`show map <file>` proves the result. Any failure raises RuntimeApiError and the caller
reloads instead; a reload is always correct, this is only faster and keeps connections.

Servers: backends.cfg is written first too. The new file is compared with the one it replaced;
when the two differ only in `server` lines of backends present in both, each new server line is
sent as it is (`add server <backend>/<line>`, then `enable health` and `enable server`), and each
server gone is drained (`state drain`) at once; draining.py waits for its sessions (at most
RHGEN_DRAIN_TIMEOUT) and deletes it, in the background. `show servers state` must then list
exactly the servers of the file (and the ones still draining), none in maintenance. The server
line is rendered once, by the template, and used both ways, so a later reload loads exactly what
the runtime API built.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import draining
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


@dataclass(frozen=True)
class ServerChanges:
    """What turns the servers of the old backends.cfg into the new one's; backends stay as they are."""

    added: tuple[tuple[str, str, str], ...]  # (backend, server, the rest of its server line)
    removed: tuple[tuple[str, str], ...]  # (backend, server)


def backend_servers(content: bytes) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(every line but server lines and comments, {backend: {server: the rest of its line}})."""
    others: list[str] = []
    servers: dict[str, dict[str, str]] = {}
    section = ""
    for raw in content.decode("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if raw[:1] not in (" ", "\t"):
            section = words[1] if words[0] == "backend" and len(words) > 1 else ""
        if words[0] == "server" and len(words) > 2 and section:
            servers.setdefault(section, {})[words[1]] = " ".join(words[2:])
        else:
            others.append(line)
            if words[0] == "backend" and section:
                servers.setdefault(section, {})
    return others, servers


def server_changes(old: bytes | None, new: bytes) -> ServerChanges | None:
    """The server changes from `old` to `new`, or None when anything else differs (a backend
    added or removed, a changed line outside servers, a server whose line changed): reload."""
    if old is None:
        return None
    old_others, old_servers = backend_servers(old)
    new_others, new_servers = backend_servers(new)
    if old_others != new_others or old_servers.keys() != new_servers.keys():
        return None
    added, removed = [], []
    for backend, servers in new_servers.items():
        before = old_servers[backend]
        if any(before[name] != line for name, line in servers.items() if name in before):
            return None
        added += [(backend, name, line) for name, line in servers.items() if name not in before]
        removed += [(backend, name) for name in before if name not in servers]
    return ServerChanges(tuple(added), tuple(removed))


def expect(socket_path: str, command: str, *answers: str) -> str:
    """Run `command`; its answer (first line) must be one of `answers` ("" for haproxy's silent success)."""
    answer = send(socket_path, command).strip()
    first = answer.splitlines()[0].strip() if answer else ""
    if first not in answers:
        raise RuntimeApiError(f"runtime API `{command}`: {first or 'no answer'}")
    return first


def add_servers(socket_path: str, added: Sequence[tuple[str, str, str]]) -> None:
    # A server name is its container's: the same one back before its drain ended is that container
    # restarted, so the sessions still draining lead to a process that is gone. They are shut first.
    draining.finish_now(socket_path, [(backend, name) for backend, name, _ in added])
    for backend, name, line in added:
        if re.search(r"[;<>\\]", line):
            raise RuntimeApiError(f"server line {backend}/{name} {line!r} cannot be sent through the runtime API")
        expect(socket_path, f"add server {backend}/{name} {line}", "New server registered.")
        if "check" in line.split():
            # A dynamic server's health check starts disabled; default-server does not apply to it either.
            expect(socket_path, f"enable health {backend}/{name}", "")
        expect(socket_path, f"enable server {backend}/{name}", "")


def verify_servers(socket_path: str, content: bytes) -> None:
    """`show servers state` must list exactly the file's servers per backend, none in maintenance
    (besides the ones this process is still draining)."""
    _, wanted = backend_servers(content)
    leaving = draining.draining(socket_path)
    live: dict[str, dict[str, int]] = {}
    for line in send(socket_path, "show servers state").splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[0].isdigit():
            live.setdefault(fields[1], {})[fields[3]] = int(fields[6])  # srv_admin_state
    for backend, servers in wanted.items():
        found = {name: admin for name, admin in live.get(backend, {}).items() if (backend, name) not in leaving}
        if set(found) != set(servers):
            raise RuntimeApiError(
                f"runtime API: backend {backend} has servers {sorted(found)} live, the file says {sorted(servers)}"
            )
        stuck = sorted(name for name, admin in found.items() if admin)  # any maintenance or drain flag
        if stuck:
            raise RuntimeApiError(f"runtime API: {backend}/{stuck[0]} is in maintenance or drain")


def apply_change(settings: Any, changed: Sequence[OutputFile], old_backends: bytes | None) -> bool:
    """True when HAPROXY_STATS_SOCKET is set, only the host map and the servers of existing
    backends changed, and the running HAProxy took it all through the runtime API;
    False means: reload as usual (which repairs whatever the runtime API did halfway)."""
    socket_path = settings.haproxy_stats_socket
    roles = {f.role: f for f in changed}
    if not socket_path or not roles or not roles.keys() <= {"map", "backends"}:
        return False
    servers = ServerChanges((), ())
    if "backends" in roles:
        found = server_changes(old_backends, roles["backends"].content)
        if found is None:
            return False
        servers = found
    try:
        add_servers(socket_path, servers.added)
        if "map" in roles:
            replace_map(socket_path, roles["map"].path, map_entries(roles["map"].content))
        draining.start(socket_path, servers.removed, settings.drain_timeout)
        if "backends" in roles:
            verify_servers(socket_path, roles["backends"].content)
    except RuntimeApiError as exc:
        log.warning("%s; reloading instead", exc)
        return False
    done = [f"{len(servers.added)} server(s) added", f"{len(servers.removed)} removed"] if "backends" in roles else []
    done += [roles["map"].path] if "map" in roles else []
    log.info("applied %s through the runtime API, no reload", ", ".join(done))
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
