"""The Docker Engine's GET /containers/json answer, for the docker source: decoded, digested for
the no-change shortcut, and made into model Containers.

The answer is decoded with msgspec straight into EngineContainer structs holding only the fields
the model reads (Id, Names, Labels, State, Status, each network's address); the rest (Image,
Command, Mounts, Ports, each network's gateway, MAC, endpoint ...) is skipped unread, as
answers.py does for the Rancher answer. An answer that does not fit the structs is decoded the
generic way, so its Skipped messages stay those of container() below.

The answer's bytes rarely repeat: Status reads "Up 3 seconds", then "Up 4 seconds". So the
shortcut (fingerprint.py) digests routing_form(): every field read above, the health taken out
of Status, and Status itself left out. Whatever can change routing (a label, a name, a network
or address, the state, the health) changes that form; the passing of time does not.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..messages import shown
from ..model import ROUTABLE_HEALTH, Alias, Container, Skipped, SourceData, container_skipped, text_labels
from .plain_http import parse_json

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ALIASES_LABEL = "rhgen.aliases"


class Endpoint(msgspec.Struct, gc=False):
    """A container's entry for one network: only its addresses are read."""

    IPAddress: Any = None
    GlobalIPv6Address: Any = None


class NetworkSettings(msgspec.Struct, gc=False):
    Networks: dict[str, Endpoint] | None = None


class EngineContainer(msgspec.Struct, gc=False):
    """The fields of one /containers/json element that the model reads. Typed Any where the
    checks in container() name a wrong kind per container."""

    Id: Any = None
    Names: Any = None
    Labels: Any = None
    State: Any = None
    Status: Any = None
    NetworkSettings: NetworkSettings | None = None


_LIST = msgspec.json.Decoder(list[EngineContainer])


def decode(body: bytes, what: str) -> tuple[Any, bool]:
    """The answer as a list of EngineContainer and True; or, when it does not fit them, whatever the
    generic decoder makes of it and False; a SourceError (parse_json's words) when it is not JSON."""
    try:
        return _LIST.decode(body), True
    except (msgspec.ValidationError, msgspec.DecodeError):
        return parse_json(body, what), False


_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def health(status: Any) -> str | None:
    """healthy, unhealthy or starting from the Status text ("Up 3 seconds (healthy)"); None without a check."""
    found = _HEALTH.search(status) if isinstance(status, str) else None
    return found.group(1).removeprefix("health: ") if found else None


def routing_form(listed: list[EngineContainer]) -> bytes:
    """Every field the model is made of, in the daemon's order, as bytes to digest: Status only as
    the health it holds. Keys sorted: the same containers always give the same bytes."""
    return msgspec.json.encode(
        [(c.Id, c.Names, c.Labels, c.State, health(c.Status), c.NetworkSettings) for c in listed],
        order="deterministic",
    )


def source_data(listed: list[Any], network: str) -> SourceData:
    """The model's Containers (and the stacks' aliases) of a decoded answer; malformed ones are Skipped."""
    containers, skipped, aliases = [], [], set()
    for index, item in enumerate(listed):
        result = container(item, index, network)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        containers.append(result)
        names = (n.strip() for n in result.labels.get(ALIASES_LABEL, "").split(","))
        aliases.update(Alias(result.stack, n) for n in names if n)
    return SourceData(tuple(containers), tuple(sorted(aliases)), tuple(skipped))


def container(item: Any, index: int, network: str) -> Container | Skipped:
    """One element of /containers/json (an EngineContainer, or a dict from the generic decoder) as
    a Container, or a Skipped naming it."""
    if isinstance(item, dict):
        item = _from_dict(item)
    if not isinstance(item, EngineContainer) or not isinstance(item.Id, str) or not item.Id:
        return Skipped(f"docker containers[{index}]", "is not a container object")
    uuid = item.Id[:12]
    names = item.Names
    name = names[0].lstrip("/") if isinstance(names, list) and names and isinstance(names[0], str) else ""
    name = name or uuid
    labels, bad_labels = text_labels(item.Labels if isinstance(item.Labels, dict) else {})
    state = item.State if isinstance(item.State, str) and item.State else "unknown"
    networks = item.NetworkSettings.Networks if item.NetworkSettings is not None else None
    ip, reason = _address(networks or {}, network)
    result = Container(
        name=name,
        uuid=uuid,
        # Not compose: the container is its own stack, and its own (only) service.
        stack=labels.get(PROJECT_LABEL) or name,
        service=labels.get(SERVICE_LABEL) or name,
        ip=ip,
        state=state,
        health=health(item.Status),
        labels=labels,
        bad_labels=bad_labels,
    )
    if reason and state == "running" and result.health in ROUTABLE_HEALTH:
        return container_skipped(name, reason)
    return result  # not running or not healthy: routing says why it gets no traffic


def _from_dict(item: dict[str, Any]) -> EngineContainer:
    """A generically decoded element in the struct's shape; a field of the wrong kind stays as it
    came (container() names it), a network entry that is not a mapping has no address."""
    settings = item.get("NetworkSettings")
    networks = settings.get("Networks") if isinstance(settings, dict) else None
    endpoints = {
        str(name): Endpoint(entry.get("IPAddress"), entry.get("GlobalIPv6Address")) if isinstance(entry, dict) else Endpoint()
        for name, entry in networks.items()
    } if isinstance(networks, dict) else None
    return EngineContainer(item.get("Id"), item.get("Names"), item.get("Labels"), item.get("State"), item.get("Status"),
                           NetworkSettings(endpoints))


def _address(networks: dict[str, Endpoint], wanted: str) -> tuple[str | None, str]:
    """The container's IP on the wanted network, or on the first (by name) that gives it one; or why there is none."""
    if wanted and wanted not in networks:
        on = ", ".join(sorted(networks)) or "none"
        return None, f"is not attached to network {shown(wanted)} (RHGEN_DOCKER_NETWORK; it is on {on})"
    for name in [wanted] if wanted else sorted(networks):
        entry = networks[name]
        ip = entry.IPAddress or entry.GlobalIPv6Address
        if isinstance(ip, str) and ip:
            return ip, ""
    if wanted:
        return None, f"has no IP address on network {shown(wanted)}"
    if not networks or set(networks) <= {"host", "none"}:
        return None, "has no network (network_mode host or none cannot be routed to)"
    return None, f"has no IP address on network{'s' if len(networks) > 1 else ''} {', '.join(sorted(networks))}"
