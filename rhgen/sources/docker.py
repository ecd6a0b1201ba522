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

Watching follows GET /events, a stream of one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import SourceError
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
