"""Docker Engine source: containers from the Docker API, in the shape the Rancher source delivers.

Stack = label com.docker.compose.project, service = label com.docker.compose.service, port
= the routing label (RANCHER_LABEL), as with Rancher. GET /containers/json lists every
labelled container, stopped ones too, so `rhgen routes` can say why one gets no traffic;
each running one is then inspected (GET /containers/<id>/json) for its health
(State.Health.Status: only `healthy` is routed when a healthcheck exists) and its IP on
RHGEN_DOCKER_NETWORK or its first network. Watching follows GET /events, a stream of one
JSON object per line. DOCKER_HOST is unix:///path/docker.sock (default) or tcp://host:port.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

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
        listed = rancher.get_json(session, f"{root}/containers/json", settings, what=f"{where} /containers/json",
                                  all="1", **filters)
        if not isinstance(listed, list):
            raise SourceError(f"{where}: /containers/json is not a list")
        containers, skipped = [], []
        for index, item in enumerate(listed):
            result = _container(session, root, settings, item, index)
            if isinstance(result, Skipped):
                skipped.append(result)
            elif result is not None:
                containers.append(result)
    data = source_data(containers, {}, where)
    return dataclasses.replace(data, skipped=data.skipped + tuple(skipped))


def _container(session: requests.Session, root: str, settings: Any, item: Any, index: int) -> dict[str, Any] | Skipped | None:
    """One listed container as a Rancher-shaped dict, a Skipped, or None when it vanished meanwhile."""
    if not isinstance(item, dict) or not isinstance(item.get("Id"), str):
        return Skipped(f"docker containers[{index}]", "is not a container object")
    names = item.get("Names")
    name = names[0].lstrip("/") if isinstance(names, list) and names and isinstance(names[0], str) else item["Id"][:12]
    what = f"container {shown(name)}"
    labels = item.get("Labels") if isinstance(item.get("Labels"), dict) else {}
    for key in (PROJECT_LABEL, SERVICE_LABEL):
        if not isinstance(labels.get(key), str) or not labels[key]:
            return Skipped(what, f"has no label {key} (stacks come from docker compose projects)")
    container = {
        "name": name,
        "uuid": item["Id"][:12],
        "stack_name": labels[PROJECT_LABEL],
        "service_name": labels[SERVICE_LABEL],
        "state": item.get("State") if isinstance(item.get("State"), str) else "unknown",
        "health_state": None,
        "primary_ip": None,
        "labels": labels,
    }
    if container["state"] != "running":
        return container  # the model says why it gets no traffic
    inspected = rancher.get_json(session, f"{root}/containers/{quote(item['Id'], safe='')}/json", settings,
                                 missing=None, what=f"docker {settings.docker_host} inspect {shown(name)}")
    if inspected is None:
        return None  # removed between the list and the inspect
    if not isinstance(inspected, dict):
        return Skipped(what, "inspect answer is not an object")
    return _inspected(container, inspected, settings.docker_network, what)


def _inspected(container: dict[str, Any], inspected: dict[str, Any], network: str, what: str) -> dict[str, Any] | Skipped:
    state = inspected.get("State") if isinstance(inspected.get("State"), dict) else {}
    health = state.get("Health") if isinstance(state.get("Health"), dict) else {}
    config = inspected.get("Config") if isinstance(inspected.get("Config"), dict) else {}
    container = {
        **container,
        "state": state.get("Status") if isinstance(state.get("Status"), str) else container["state"],
        "health_state": health.get("Status") if isinstance(health.get("Status"), str) else None,
        "labels": config.get("Labels") if isinstance(config.get("Labels"), dict) else container["labels"],
    }
    settings_ = inspected.get("NetworkSettings") if isinstance(inspected.get("NetworkSettings"), dict) else {}
    networks = settings_.get("Networks") if isinstance(settings_.get("Networks"), dict) else {}
    ip, reason = _address(networks, network)
    if reason and container["state"] == "running" and container["health_state"] in ROUTABLE_HEALTH:
        return Skipped(what, reason)
    return {**container, "primary_ip": ip}


def _address(networks: dict[str, Any], wanted: str) -> tuple[str | None, str]:
    """The container's IP on the wanted network (or its first one), or why there is none."""
    if wanted and wanted not in networks:
        on = ", ".join(sorted(networks)) or "none"
        return None, f"is not attached to network {shown(wanted)} (RHGEN_DOCKER_NETWORK; it is on {on})"
    name = wanted or next(iter(networks), "")
    if not name:
        return None, "has no network (network_mode host or none cannot be routed to)"
    entry = networks[name] if isinstance(networks[name], dict) else {}
    ip = entry.get("IPAddress") or entry.get("GlobalIPv6Address")
    if not isinstance(ip, str) or not ip:
        return None, f"has no IP address on network {shown(name)}"
    return ip, ""


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
