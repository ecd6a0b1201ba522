"""Docker Engine source: containers from the Docker API, in the shape the Rancher source delivers.

One GET /containers/json (all=1, filtered by the routing label RANCHER_LABEL on the daemon's
side) per run holds everything routing needs, so no container is inspected:

- stack = label com.docker.compose.project, service = label com.docker.compose.service; a
  container started without compose (`docker run --name app-r1`) is its own stack and service,
  both its name (the model skips, with a warning, a name that is not a DNS label);
- State is running/paused/restarting/exited/dead/created: only running is routed; the health
  is in the Status text: "Up 3 seconds (healthy)", "(health: starting)", "(unhealthy)";
- the address is the IP on RHGEN_DOCKER_NETWORK, or on the alphabetically first network that
  gives the container an IP (deterministic whatever order the daemon lists them in);
- label rhgen.aliases=www,shop.example.com adds host names for the container's stack, merged
  (union) over the stack's containers and fed to the model as the Rancher proxy aliases are.

Watching follows GET /events, a stream of one JSON object per line. DOCKER_HOST is
unix:///path/docker.sock (default) or tcp://host:port.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from ..errors import SourceError
from ..messages import shown
from ..model import ROUTABLE_HEALTH, SourceData, Skipped
from . import rancher, retry_delay, source_data

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ALIASES_LABEL = "rhgen.aliases"
# An events stream silent this long is reopened (with `since`, so nothing is lost): a dead
# daemon behind tcp:// would otherwise hold the watch forever.
EVENTS_IDLE_SECONDS = 300
# Container events that never change routing (health checks run as exec_* every interval).
QUIET_ACTIONS = {"attach", "detach", "resize", "top", "export", "copy", "archive-path", "extract-to-dir",
                 "commit", "create", "mount", "unmount"}


# --- HTTP over a unix socket ----------------------------------------------------------------


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, socket_path: str, **kwargs: Any):
        super().__init__("localhost", **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, int | float) else None)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise urllib3.exceptions.NewConnectionError(self, f"{self.socket_path}: {exc.strerror}") from exc
        return sock


class _UnixPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, socket_path: str):
        super().__init__("localhost")
        self.socket_path = socket_path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.socket_path, timeout=self.timeout.connect_timeout)


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """Every request through this adapter goes to one unix socket, whatever the URL's host."""

    def __init__(self, socket_path: str):
        super().__init__()
        self.pool = _UnixPool(socket_path)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None, cert: Any = None) -> Any:
        return self.pool

    def get_connection(self, url: Any, proxies: Any = None) -> Any:  # requests < 2.32
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


@contextmanager
def _session(settings: Any) -> Iterator[tuple[requests.Session, str]]:
    """A session and the API root for DOCKER_HOST."""
    with requests.Session() as session:
        session.trust_env = False  # never through an HTTP proxy
        if settings.docker_host.startswith("unix://"):
            session.mount("http://docker/", _UnixAdapter(settings.docker_host[len("unix://"):]))
            yield session, "http://docker"
        else:
            yield session, "http://" + settings.docker_host[len("tcp://"):]


# --- fetching -----------------------------------------------------------------------------------


def fetch(settings: Any) -> SourceData:
    where = f"docker {settings.docker_host}"
    label = settings.rancher_label
    filters = {"filters": json.dumps({"label": [label]})} if label else {}
    with _session(settings) as (session, root):
        try:
            listed = rancher.get_json(session, f"{root}/containers/json", settings,
                                      what=f"{where} /containers/json", all="1", **filters)
        except SourceError as exc:
            raise _socket_error(settings.docker_host) or exc from None
    if not isinstance(listed, list):
        raise SourceError(f"{where}: /containers/json is not a list")
    containers, skipped, aliases = [], [], {}
    for index, item in enumerate(listed):
        result = container(item, index, settings.docker_network)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        containers.append(result)
        names = [n.strip() for n in _label(result["labels"], ALIASES_LABEL).split(",")]
        aliases.setdefault(result["stack_name"], set()).update(n for n in names if n)
    metadata = {"aliases": {stack: sorted(names) for stack, names in sorted(aliases.items()) if names}}
    data = source_data(containers, metadata, where)
    return dataclasses.replace(data, skipped=data.skipped + tuple(skipped))


def _socket_error(docker_host: str) -> SourceError | None:
    """After a failed call: a one-line error saying what to do when the unix socket is missing or
    not ours to use (the two ways a container is usually set up wrong); None for anything else."""
    if not docker_host.startswith("unix://"):
        return None
    path = docker_host[len("unix://"):]
    if not os.path.exists(path):
        return SourceError(
            f"docker socket {path} not found (DOCKER_HOST={docker_host}): mount it into the container with "
            f"-v /var/run/docker.sock:{path}:ro"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        stat = os.stat(path)
        try:
            group = grp.getgrgid(stat.st_gid).gr_name
        except KeyError:
            group = str(stat.st_gid)
        return SourceError(
            f"docker socket {path}: permission denied (owned by group {group}, gid {stat.st_gid}, mode "
            f"{stat.st_mode & 0o777:o}): run rhgen in that group (docker run --group-add {stat.st_gid}) or as root"
        )
    return None


_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def container(item: Any, index: int, network: str) -> dict[str, Any] | Skipped:
    """One element of /containers/json as a Rancher-shaped dict, or a Skipped naming it."""
    if not isinstance(item, dict) or not isinstance(item.get("Id"), str):
        return Skipped(f"docker containers[{index}]", "is not a container object")
    names = item.get("Names")
    name = names[0].lstrip("/") if isinstance(names, list) and names and isinstance(names[0], str) else item["Id"][:12]
    labels = item.get("Labels") if isinstance(item.get("Labels"), dict) else {}
    state = item.get("State") if isinstance(item.get("State"), str) and item.get("State") else "unknown"
    status = item.get("Status") if isinstance(item.get("Status"), str) else ""
    health = _HEALTH.search(status)
    settings_ = item.get("NetworkSettings") if isinstance(item.get("NetworkSettings"), dict) else {}
    networks = settings_.get("Networks") if isinstance(settings_.get("Networks"), dict) else {}
    ip, reason = _address(networks, network)
    container = {
        "name": name,
        "uuid": item["Id"][:12],
        # Not compose: the container is its own stack, and its own (only) service.
        "stack_name": _label(labels, PROJECT_LABEL) or name,
        "service_name": _label(labels, SERVICE_LABEL) or name,
        "state": state,
        "health_state": health.group(1).removeprefix("health: ") if health else None,
        "primary_ip": ip,
        "labels": labels,
    }
    if reason and state == "running" and container["health_state"] in ROUTABLE_HEALTH:
        return Skipped(f"container {shown(name)}", reason)
    return container  # not running or not healthy: the model says why it gets no traffic


def _label(labels: dict[str, Any], key: str) -> str:
    value = labels.get(key)
    return value if isinstance(value, str) else ""


def _address(networks: dict[str, Any], wanted: str) -> tuple[str | None, str]:
    """The container's IP on the wanted network, or on the first (by name) that gives it one; or why there is none."""
    if wanted and wanted not in networks:
        on = ", ".join(sorted(networks)) or "none"
        return None, f"is not attached to network {shown(wanted)} (RHGEN_DOCKER_NETWORK; it is on {on})"
    for name in [wanted] if wanted else sorted(networks):
        entry = networks[name] if isinstance(networks[name], dict) else {}
        ip = entry.get("IPAddress") or entry.get("GlobalIPv6Address")
        if isinstance(ip, str) and ip:
            return ip, ""
    if wanted:
        return None, f"has no IP address on network {shown(wanted)}"
    if not networks or set(networks) <= {"host", "none"}:
        return None, "has no network (network_mode host or none cannot be routed to)"
    return None, f"has no IP address on network{'s' if len(networks) > 1 else ''} {', '.join(sorted(networks))}"


# --- watching -----------------------------------------------------------------------------------


def relevant(event: Any, label: str) -> bool:
    """True for an event that may change routing: a labelled container starting, stopping, changing
    health, ..., or any container joining or leaving a network."""
    if not isinstance(event, dict):
        return False
    kind = event.get("Type") or "container"
    action = event.get("Action") or event.get("status") or ""
    if not isinstance(action, str):
        return False
    if kind == "network":
        return action in ("connect", "disconnect")
    if kind != "container" or action.startswith("exec_") or action in QUIET_ACTIONS:
        return False
    actor = event.get("Actor") if isinstance(event.get("Actor"), dict) else {}
    attributes = actor.get("Attributes") if isinstance(actor.get("Attributes"), dict) else None
    return attributes is None or not label or label in attributes


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Follow GET /events; notify() on every relevant event, and after the daemon was unreachable.
    A stream that breaks is reopened with `since`, so the events of the gap are replayed."""
    where = f"docker {settings.docker_host} /events"
    filters = json.dumps({"type": ["container", "network"]})
    since = int(time.time()) - 1  # events of the moment before the watch started are not lost
    last_nano = 0
    failures = 0
    while not stop.is_set():
        opened, streaming = time.monotonic(), False
        try:
            with _session(settings) as (session, root), session.get(
                f"{root}/events", params={"filters": filters, "since": str(since)}, stream=True,
                timeout=(settings.metadata_connect_timeout, EVENTS_IDLE_SECONDS),
            ) as answer:
                if answer.status_code != 200:
                    raise SourceError(f"HTTP {answer.status_code}")
                streaming = True
                if failures:
                    log.warning("%s: answering again", where)
                    failures = 0
                    notify()  # whatever happened while it was unreachable
                for line in answer.iter_lines():
                    if stop.is_set():
                        return
                    event = _parse_event(line)
                    nano = event.get("timeNano") if isinstance(event, dict) else None
                    if isinstance(nano, int) and not isinstance(nano, bool):
                        if nano <= last_nano:
                            continue  # replayed after a reopen: seen already
                        last_nano = nano
                    if relevant(event, settings.rancher_label):
                        notify()
        except requests.RequestException as exc:
            if not streaming:
                failures += 1
                reason = rancher.connection_reason(exc) if isinstance(exc, requests.ConnectionError) else str(exc)
                _pause(where, reason or exc.__class__.__name__, failures, stop)
                continue
        except SourceError as exc:
            failures += 1
            _pause(where, str(exc), failures, stop)
            continue
        # The stream ended or broke (idle timeout, daemon restart): reopen, replaying from just before now.
        since = int(time.time()) - 1
        log.info("%s: stream ended; reopening", where)
        if time.monotonic() - opened < 1.0:
            stop.wait(1.0)


def _parse_event(line: bytes) -> Any:
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except ValueError:
        log.info("docker event is not JSON: %r", line[:80])
        return None


def _pause(where: str, reason: str, failures: int, stop: threading.Event) -> None:
    delay = retry_delay(failures)
    log.warning("%s: %s; trying again in %.1f s", where, reason, delay)
    stop.wait(delay)
