"""Docker Engine source: containers from the Docker API, in the shape the Rancher source delivers.

Stack = label com.docker.compose.project, service = label com.docker.compose.service, port
= the routing label (RANCHER_LABEL), as with Rancher. GET /containers/json lists every
labelled container, stopped ones too, so `rhgen routes` can say why one gets no traffic;
each running one is then inspected (GET /containers/<id>/json) for its health
(State.Health.Status: only `healthy` is routed when a healthcheck exists) and its IP on
RHGEN_DOCKER_NETWORK or its first network. DOCKER_HOST is unix:///path/docker.sock (default)
or tcp://host:port.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from ..errors import SourceError
from ..model import ROUTABLE_HEALTH, SourceData, Skipped
from . import rancher, source_data

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


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
    what = f"container {name!r}"
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
                                 missing=None, what=f"docker {settings.docker_host} inspect {name}")
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
        return None, f"is not attached to network {wanted!r} (RHGEN_DOCKER_NETWORK; it is on {on})"
    name = wanted or next(iter(networks), "")
    if not name:
        return None, "has no network (network_mode host or none cannot be routed to)"
    entry = networks[name] if isinstance(networks[name], dict) else {}
    ip = entry.get("IPAddress") or entry.get("GlobalIPv6Address")
    if not isinstance(ip, str) or not ip:
        return None, f"has no IP address on network {name!r}"
    return ip, ""

