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

engine_containers.py decodes the answer and makes the model of it; fetch_answers() lets the
no-change shortcut skip the model when nothing routing reads has changed since the last run.

Watching follows GET /events, a stream of one JSON object per line. Network events carry no
container labels, only the container's ID: the watch keeps the IDs of the labelled containers
(listed when the stream opens, then learnt from their own events), so that other containers
joining and leaving networks on a busy host cause no run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import SourceError
from ..messages import shown
from ..model import SourceData
from . import engine_containers, engine_http
from .answers import Answers
from .engine_containers import container  # noqa: F401 - the docker source's model of one container

log = logging.getLogger(__name__)

# Container events that never change routing (health checks run as exec_* every interval).
QUIET_ACTIONS = {"attach", "detach", "resize", "top", "export", "copy", "archive-path", "extract-to-dir",
                 "commit", "create", "mount", "unmount"}


# --- fetching -----------------------------------------------------------------------------------


def fetch(settings: Any) -> SourceData:
    return fetch_answers(settings).decode()


def fetch_answers(settings: Any) -> Answers:
    """The list as read and decoded into structs; the model waits until the no-change shortcut has
    had its look at the answer's routing form (engine_containers.py: never its Status text)."""
    where = f"docker {settings.docker_host}"
    label = settings.rancher_label
    filters = {"filters": json.dumps({"label": [label]})} if label else {}
    try:
        body = engine_http.get_body(settings, "/containers/json", f"{where} /containers/json", all="1", **filters)
    except SourceError as exc:
        raise engine_http.socket_error(settings.docker_host) or exc from None
    listed, typed = engine_containers.decode(body, f"{where} /containers/json")
    if not isinstance(listed, list):
        raise SourceError(f"{where}: /containers/json is not a list")
    # An answer of another shape is digested as read: any change of it still takes the full path.
    raw = b"docker\n" + engine_containers.routing_form(listed) if typed else bytes(body)
    return Answers((raw,), lambda: engine_containers.source_data(listed, settings.docker_network))


# --- watching -----------------------------------------------------------------------------------


def relevant(event: Any, label: str, labelled: set[str] | None = None) -> bool:
    """True for an event that may change routing: a labelled container starting, stopping, changing
    health, ..., or joining or leaving a network. Network events carry no container labels, only the
    container's ID: with `labelled` (the IDs of the containers with the routing label) only theirs
    count; with None (no RANCHER_LABEL: every container is routed) every one does."""
    if not isinstance(event, dict):
        return False
    kind = event.get("Type") or "container"
    action = event.get("Action") or event.get("status") or ""
    if not isinstance(action, str):
        return False
    attributes = _attributes(event)
    if kind == "network":
        if action not in ("connect", "disconnect"):
            return False
        # Without attributes the container is unknown: counted, as a missed change costs more than a run.
        return labelled is None or attributes is None or attributes.get("container") in labelled
    if kind != "container" or action.startswith("exec_") or action in QUIET_ACTIONS:
        return False
    return attributes is None or not label or label in attributes


def track(event: Any, label: str, labelled: set[str]) -> None:
    """Keep `labelled` up to date from a container event: a labelled container's events (its create
    first of all) add its ID, its destroy takes it out again."""
    attributes = _attributes(event)
    if not attributes or label not in attributes or (event.get("Type") or "container") != "container":
        return
    container_id = event["Actor"].get("ID")
    if isinstance(container_id, str):
        if (event.get("Action") or event.get("status")) == "destroy":
            labelled.discard(container_id)
        else:
            labelled.add(container_id)


def _attributes(event: Any) -> dict[str, Any] | None:
    actor = event.get("Actor") if isinstance(event, dict) else None
    attributes = actor.get("Attributes") if isinstance(actor, dict) else None
    return attributes if isinstance(attributes, dict) else None


def labelled_ids(settings: Any) -> set[str] | None:
    """The IDs of every container with the routing label, stopped ones included; None without a label."""
    if not settings.rancher_label:
        return None
    where = f"docker {settings.docker_host} /containers/json"
    body = engine_http.get_body(settings, "/containers/json", where, all="1",
                                filters=json.dumps({"label": [settings.rancher_label]}))
    listed, _ = engine_containers.decode(body, where)
    if not isinstance(listed, list):
        raise SourceError(f"{where}: is not a list")
    ids = (item.get("Id") if isinstance(item, dict) else getattr(item, "Id", None) for item in listed)
    return {found for found in ids if isinstance(found, str)}


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Follow GET /events; notify() on every relevant event, and after the daemon was unreachable.
    A stream that breaks is reopened with `since`, so the events of the gap are replayed."""
    import requests  # the watch's stream only: a run of `rhgen generate` never imports it

    from . import engine
    from .http import connection_reason

    where = f"docker {settings.docker_host} /events"
    filters = json.dumps({"type": ["container", "network"]})
    since = int(time.time()) - 1  # events of the moment before the watch started are not lost
    last_nano = 0
    failures = 0
    while not stop.is_set():
        opened, streaming = time.monotonic(), False
        try:
            # Listed after `since` was taken: a container created meanwhile has its create replayed.
            labelled = labelled_ids(settings)
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
                    if labelled is not None:
                        track(event, settings.rancher_label, labelled)
                    if relevant(event, settings.rancher_label, labelled):
                        log.info("%s: %s", where, _described(event))
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


def _described(event: dict[str, Any]) -> str:
    """A relevant event in a few words (with -v): "container start 'web-1'", "network connect of container 0123456789ab"."""
    action = event.get("Action") or event.get("status")
    attributes = _attributes(event) or {}
    if (event.get("Type") or "container") == "network":
        return f"network {action} of container {str(attributes.get('container', '?'))[:12]}"
    return f"container {action} {shown(str(attributes.get('name', '?')))}"


def _parse_event(line: bytes) -> Any:
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except ValueError:
        log.info("docker event is not JSON: %r", line[:80])
        return None
