"""Docker Engine source: containers from the Docker API, as model Containers.

One GET /containers/json (all=1, filtered by the routing label RANCHER_LABEL on the daemon's
side) per run holds everything routing needs, so no container is inspected:

- stack = label com.docker.compose.project, service = label com.docker.compose.service; a
  container started without compose (`docker run --name app-r1`) is its own stack and service,
  both its name (routing skips, with a warning, a name that is not a DNS label);
- State is running/paused/restarting/exited/dead/created: only running is routed; the health
  is in the Status text: "Up 3 seconds (healthy)", "(health: starting)", "(unhealthy)";
- the address is the IP on RHGEN_DOCKER_NETWORK, or on the alphabetically first network that
  gives the container an IP (deterministic whatever order the daemon lists them in);
- label rhgen.aliases=www,shop.example.com adds host names for the container's stack, merged
  (union) over the stack's containers: Aliases, as the Rancher proxy's aliases are.

Watching follows GET /events, a stream of one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from ..errors import SourceError
from ..messages import shown
from ..model import ROUTABLE_HEALTH, Alias, Container, Skipped, SourceData, text_labels
from . import engine
from .http import connection_reason, get_json

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ALIASES_LABEL = "rhgen.aliases"
# Container events that never change routing (health checks run as exec_* every interval).
QUIET_ACTIONS = {"attach", "detach", "resize", "top", "export", "copy", "archive-path", "extract-to-dir",
                 "commit", "create", "mount", "unmount"}


# --- fetching -----------------------------------------------------------------------------------


def fetch(settings: Any) -> SourceData:
    where = f"docker {settings.docker_host}"
    label = settings.rancher_label
    filters = {"filters": json.dumps({"label": [label]})} if label else {}
    with engine.session(settings) as (session, root):
        try:
            listed = get_json(session, f"{root}/containers/json", settings,
                              what=f"{where} /containers/json", all="1", **filters)
        except SourceError as exc:
            raise engine.socket_error(settings.docker_host) or exc from None
    if not isinstance(listed, list):
        raise SourceError(f"{where}: /containers/json is not a list")
    containers, skipped, aliases = [], [], set()
    for index, item in enumerate(listed):
        result = container(item, index, settings.docker_network)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        containers.append(result)
        names = (n.strip() for n in result.labels.get(ALIASES_LABEL, "").split(","))
        aliases.update(Alias(result.stack, n) for n in names if n)
    return SourceData(tuple(containers), tuple(sorted(aliases)), tuple(skipped))


_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def container(item: Any, index: int, network: str) -> Container | Skipped:
    """One element of /containers/json as a Container, or a Skipped naming it."""
    if not isinstance(item, dict) or not isinstance(item.get("Id"), str) or not item["Id"]:
        return Skipped(f"docker containers[{index}]", "is not a container object")
    uuid = item["Id"][:12]
    names = item.get("Names")
    name = names[0].lstrip("/") if isinstance(names, list) and names and isinstance(names[0], str) else ""
    name = name or uuid
    labels, bad_labels = text_labels(item.get("Labels") if isinstance(item.get("Labels"), dict) else {})
    state = item.get("State") if isinstance(item.get("State"), str) and item.get("State") else "unknown"
    status = item.get("Status") if isinstance(item.get("Status"), str) else ""
    health = _HEALTH.search(status)
    settings_ = item.get("NetworkSettings") if isinstance(item.get("NetworkSettings"), dict) else {}
    networks = settings_.get("Networks") if isinstance(settings_.get("Networks"), dict) else {}
    ip, reason = _address(networks, network)
    result = Container(
        name=name,
        uuid=uuid,
        # Not compose: the container is its own stack, and its own (only) service.
        stack=labels.get(PROJECT_LABEL) or name,
        service=labels.get(SERVICE_LABEL) or name,
        ip=ip,
        state=state,
        health=health.group(1).removeprefix("health: ") if health else None,
        labels=labels,
        bad_labels=bad_labels,
    )
    if reason and state == "running" and result.health in ROUTABLE_HEALTH:
        return Skipped(f"container {shown(name)}", reason)
    return result  # not running or not healthy: routing says why it gets no traffic


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
            with engine.session(settings) as (session, root), session.get(
                f"{root}/events", params={"filters": filters, "since": str(since)}, stream=True,
                timeout=(settings.metadata_connect_timeout, engine.EVENTS_IDLE_SECONDS),
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
                reason = connection_reason(exc) if isinstance(exc, requests.ConnectionError) else str(exc)
                engine.pause(where, reason or exc.__class__.__name__, failures, stop)
                continue
        except SourceError as exc:
            failures += 1
            engine.pause(where, str(exc), failures, stop)
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
