"""Docker Swarm mode source: services and their tasks from a manager's API, as model Containers.

A service is routed when its own labels (Spec.Labels; compose `deploy.labels`) carry the routing
label. Stack = label com.docker.stack.namespace (set by `docker stack deploy`), else the service
name; service = the name without the `<stack>_` prefix. Servers are the service's tasks whose
desired state and status are both `running` (swarm reports a task with a healthcheck as
`starting` until it is healthy), at their address on RHGEN_DOCKER_NETWORK, matched by network
name or ID; the `ingress` network is never used. RHGEN_SWARM_ENDPOINT=vip gives one server per
service at its virtual IP instead, so Docker balances. Endpoints: /info (is this a manager?),
/networks, /services, /tasks?filters={"desired-state":["running"]}.

Watching: Docker's events report services created, updated and removed, but not their tasks
starting and stopping, so the events stream is followed and the tasks are polled every
RHGEN_SWARM_POLL seconds as well.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import SourceError
from ..model import Container, Skipped, SourceData, text_labels
from . import engine_http
from .plain_http import parse_json

log = logging.getLogger(__name__)

STACK_LABEL = "com.docker.stack.namespace"
RUNNING = json.dumps({"desired-state": ["running"]})


def fetch(settings: Any) -> SourceData:
    where = f"swarm {settings.docker_host}"
    _require_manager(_get(settings, where, "info"), where)
    networks = _listed(settings, where, "networks")
    services = _listed(settings, where, "services")
    tasks = _listed(settings, where, "tasks", filters=RUNNING)
    names = {n["Id"]: n["Name"] for n in networks
             if isinstance(n, dict) and isinstance(n.get("Id"), str) and isinstance(n.get("Name"), str)}
    by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        if isinstance(task, dict) and isinstance(task.get("ServiceID"), str):
            by_service.setdefault(task["ServiceID"], []).append(task)
    containers: list[Container] = []
    skipped: list[Skipped] = []
    for index, service in enumerate(services):
        for result in _service(service, index, by_service, names, settings):
            (skipped if isinstance(result, Skipped) else containers).append(result)
    return SourceData(tuple(containers), skipped=tuple(skipped))


def _require_manager(info: Any, where: str) -> None:
    swarm = info.get("Swarm") if isinstance(info, dict) and isinstance(info.get("Swarm"), dict) else {}
    if swarm.get("LocalNodeState") != "active":
        raise SourceError(f"{where}: this node is not in a swarm (docker swarm init, or point DOCKER_HOST at a manager)")
    if swarm.get("ControlAvailable") is not True:
        raise SourceError(f"{where}: this node is a worker: point DOCKER_HOST at a manager")


def _get(settings: Any, where: str, kind: str, **params: str) -> Any:
    """One answer of the Engine API as JSON (engine_http.py: the standard library's client)."""
    what = f"{where} /{kind}"
    return parse_json(engine_http.get_body(settings, f"/{kind}", what, **params), what)


def _listed(settings: Any, where: str, kind: str, **params: str) -> list[Any]:
    answer = _get(settings, where, kind, **params)
    if not isinstance(answer, list):
        raise SourceError(f"{where}: /{kind} is not a list")
    return answer


def _service(service: Any, index: int, tasks: dict[str, list[dict[str, Any]]], networks: dict[str, str],
             settings: Any) -> list[Container | Skipped]:
    """The containers of one service (its tasks, or its VIP), or why it has none."""
    if not isinstance(service, dict) or not isinstance(service.get("ID"), str):
        return [Skipped(f"swarm services[{index}]", "is not a service object")]
    spec = service.get("Spec") if isinstance(service.get("Spec"), dict) else {}
    name = spec.get("Name") if isinstance(spec.get("Name"), str) and spec["Name"] else service["ID"][:12]
    what = f"service {name!r}"
    labels = spec.get("Labels") if isinstance(spec.get("Labels"), dict) else {}
    label = settings.rancher_label
    if label not in labels:
        template = spec.get("TaskTemplate") if isinstance(spec.get("TaskTemplate"), dict) else {}
        container = template.get("ContainerSpec") if isinstance(template.get("ContainerSpec"), dict) else {}
        on_containers = isinstance(container.get("Labels"), dict) and label in container["Labels"]
        where = "on its containers, not on the service (compose: deploy.labels)" if on_containers else "(compose: deploy.labels)"
        return [Skipped(what, f"has no service label {label} {where}", warn=on_containers)]
    stack = labels.get(STACK_LABEL) if isinstance(labels.get(STACK_LABEL), str) and labels[STACK_LABEL] else name
    text, bad_labels = text_labels(labels)
    # What the containers of this service share; each task (or the VIP) fills in the rest.
    service_name = name[len(stack) + 1:] if name.startswith(f"{stack}_") else ""
    base = Container(name=name, uuid="", stack=stack, service=service_name or name, ip=None, state="", health=None,
                     labels=text, bad_labels=bad_labels)
    if settings.swarm_endpoint == "vip":
        return [_vip(service, base, what, tasks.get(service["ID"], []), networks, settings.docker_network)]
    results: list[Container | Skipped] = []
    for task in sorted(tasks.get(service["ID"], []), key=lambda t: (_slot(t), str(t.get("ID")))):
        results.append(_task(task, base, name, settings.docker_network))
    return results


def _task(task: dict[str, Any], base: Container, service: str, wanted: str) -> Container | Skipped:
    task_id = task.get("ID") if isinstance(task.get("ID"), str) else ""
    # The name docker gives the task's container: <service>.<slot> (replicated) or <service>.<node> (global).
    slot = _slot(task) or (task.get("NodeID") if isinstance(task.get("NodeID"), str) else "")
    name = f"{service}.{slot}.{task_id[:12]}" if slot else f"{service}.{task_id[:12]}"
    status = task.get("Status") if isinstance(task.get("Status"), dict) else {}
    state = status.get("State") if isinstance(status.get("State"), str) and status.get("State") else "unknown"
    container = replace(base, name=name, uuid=task_id[:12] or name, state=state)
    if state != "running":
        return container  # routing says why it gets no traffic
    attached: dict[str, tuple[str, str]] = {}  # name -> (id, address)
    for attachment in _list(task.get("NetworksAttachments")):
        network = attachment.get("Network") if isinstance(attachment, dict) and isinstance(attachment.get("Network"), dict) else {}
        spec = network.get("Spec") if isinstance(network.get("Spec"), dict) else {}
        addresses = attachment.get("Addresses") if isinstance(attachment.get("Addresses"), list) else []
        if isinstance(spec.get("Name"), str) and not spec.get("Ingress") and spec["Name"] != "ingress":
            attached[spec["Name"]] = (str(network.get("ID", "")), _ip(addresses[0] if addresses else None))
    ip, reason = _pick(attached, wanted)
    return Skipped(f"task {name!r}", reason) if reason else replace(container, ip=ip)


def _vip(service: dict[str, Any], base: Container, what: str, tasks: list[dict[str, Any]],
         networks: dict[str, str], wanted: str) -> Container | Skipped:
    endpoint = service.get("Endpoint") if isinstance(service.get("Endpoint"), dict) else {}
    attached = {}
    for vip in _list(endpoint.get("VirtualIPs")):
        if isinstance(vip, dict) and isinstance(vip.get("NetworkID"), str) and vip["NetworkID"] in networks and networks[vip["NetworkID"]] != "ingress":
            attached[networks[vip["NetworkID"]]] = (vip["NetworkID"], _ip(vip.get("Addr")))
    if not attached:
        spec = service.get("Spec") if isinstance(service.get("Spec"), dict) else {}
        declared = (endpoint.get("Spec"), spec.get("EndpointSpec"))  # the daemon leaves Endpoint.Spec out for dnsrr
        mode = next((d["Mode"] for d in declared if isinstance(d, dict) and isinstance(d.get("Mode"), str)), None)
        return Skipped(what, f"has no virtual IP (endpoint mode {mode or 'unknown'}; RHGEN_SWARM_ENDPOINT=tasks routes to its tasks)")
    ip, reason = _pick(attached, wanted)
    if reason:
        return Skipped(what, reason)
    running = any(isinstance(t.get("Status"), dict) and t["Status"].get("State") == "running" for t in tasks)
    return replace(base, uuid=service["ID"][:12], state="running" if running else "without running tasks", ip=ip)


def _slot(task: dict[str, Any]) -> int:
    slot = task.get("Slot")
    return slot if isinstance(slot, int) and not isinstance(slot, bool) else 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ip(address: Any) -> str:
    return address.split("/", 1)[0] if isinstance(address, str) else ""


def _pick(attached: dict[str, tuple[str, str]], wanted: str) -> tuple[str | None, str]:
    """The address on the wanted network (by name or ID), or the only one, or why there is none."""
    on = ", ".join(sorted(attached)) or "none but ingress"
    if wanted:
        found = [address for name, (network_id, address) in attached.items() if wanted in (name, network_id)]
        if not found:
            return None, f"is not attached to network {wanted!r} (RHGEN_DOCKER_NETWORK; it is on {on})"
    elif len(attached) != 1:
        return None, (f"is on several networks ({on}): set RHGEN_DOCKER_NETWORK to the one the proxy shares"
                      if attached else "has no network but ingress (the routing mesh cannot be routed to)")
    else:
        found = [address for _, address in attached.values()]
    return (found[0], "") if found[0] else (None, f"has no address on network {wanted or on!r}")


# --- watching -----------------------------------------------------------------------------------


def digest(settings: Any) -> str:
    """A fingerprint of what the task poll watches: running tasks, their state and addresses."""
    where = f"swarm {settings.docker_host}"
    tasks = _listed(settings, where, "tasks", filters=RUNNING)
    seen = sorted(
        (str(t.get("ID")), json.dumps(t.get("Status", {}).get("State") if isinstance(t.get("Status"), dict) else None),
         json.dumps(t.get("NetworksAttachments"), sort_keys=True, default=str))
        for t in tasks if isinstance(t, dict)
    )
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Service events (create, update, remove) from GET /events, and a task poll every
    RHGEN_SWARM_POLL seconds: notify() on either."""
    from . import engine  # the watch's streams are on requests; a one-shot run never imports it

    events = threading.Thread(target=_follow_events, args=(settings, notify, stop), name="swarm-events", daemon=True)
    events.start()
    where = f"swarm {settings.docker_host} /tasks"
    last, failures = None, 0
    while not stop.is_set():
        try:
            current = digest(settings)
        except SourceError as exc:
            failures += 1
            engine.pause(where, str(exc), failures, stop)
            continue
        if failures:
            log.warning("%s: answering again", where)
            failures = 0
        if last is not None and current != last:
            notify()
        last = current
        stop.wait(settings.swarm_poll)


def _follow_events(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    import requests

    from . import engine

    where = f"swarm {settings.docker_host} /events"
    filters = json.dumps({"type": ["service"]})
    failures = 0
    while not stop.is_set():
        try:
            with engine.session(settings) as (session, root), session.get(
                f"{root}/events", params={"filters": filters}, stream=True,
                timeout=(settings.metadata_connect_timeout, engine.EVENTS_IDLE_SECONDS),
            ) as answer:
                if answer.status_code != 200:
                    raise SourceError(f"HTTP {answer.status_code}")
                failures = 0
                for line in answer.iter_lines():
                    if stop.is_set():
                        return
                    if line.strip():
                        notify()
        except (requests.RequestException, SourceError) as exc:
            failures += 1
            engine.pause(where, str(exc) or exc.__class__.__name__, failures, stop)
            continue
        stop.wait(1.0)  # the stream ended (idle timeout, daemon restart): reopen; the task poll covers the gap
