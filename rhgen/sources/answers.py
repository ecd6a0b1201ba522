"""The Rancher shapes, read by the rancher and file sources: /containers (a list of container
objects) and /self/service/metadata (the proxy's own service: aliases, ssl_cert, ssl_key).

Untrusted JSON becomes model objects here: a malformed container or alias becomes a Skipped
naming it; an answer of the wrong shape as a whole is a SourceError.

The /containers answer is decoded with msgspec straight into RancherContainer structs holding
only the fields the model reads: at 10,000 containers the answer is 6 MB of JSON, which
json.loads turns into ~20 MB of dicts of fields nobody reads (dns, hostname, create_index ...),
held beside the model; msgspec skips those without building them, in a third of the time. An
answer that does not fit the structs (not a list of objects, not strict JSON) is decoded the
generic way, so its Skipped and SourceError messages stay those of the checks below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..errors import SourceError
from ..messages import shown
from ..model import Alias, Container, Skipped, SourceData, container_skipped, json_kind, text_labels


class RancherContainer(msgspec.Struct, gc=False):
    """The fields of one /containers element that the model reads; every other one is skipped
    unread. Typed Any: the checks in container_from_json name a wrong kind per container."""

    name: Any = None
    uuid: Any = None
    stack_name: Any = None
    service_name: Any = None
    state: Any = None
    health_state: Any = None
    primary_ip: Any = None
    ips: Any = None
    labels: Any = None


_CONTAINERS = msgspec.json.Decoder(list[RancherContainer])


def decode_containers(body: bytes) -> Any:
    """The /containers answer: a list of RancherContainer, or whatever the generic decoder makes
    of an answer of another shape (json's ValueError or RecursionError when it is not JSON)."""
    try:
        return _CONTAINERS.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return json.loads(body)


@dataclass(frozen=True)
class Answers:
    """What a Rancher-shaped source fetched, not decoded yet: `raw` is every byte read (what the
    no-change shortcut digests, fingerprint.py), `decode()` makes the SourceData of it."""

    raw: tuple[bytes, ...]  # the answers as read, in order (not joined: no second copy of 6 MB)
    decode: Callable[[], SourceData]


def preview(body: bytes) -> str:
    """The start of an answer, for a message saying it is not what was expected."""
    text = body[:60].decode("utf-8", "replace").replace("\n", " ").strip()
    return f"starts with {text!r}" if text else "empty"


def source_data(containers: Any, service_metadata: Any, where: str) -> SourceData:
    """Check the two top-level shapes, then type-check each container and alias."""
    if not isinstance(containers, list):
        raise SourceError(f"{where}: containers is a {json_kind(containers)}, expected a list")
    if service_metadata is None:
        service_metadata = {}
    if not isinstance(service_metadata, dict):
        raise SourceError(f"{where}: the proxy service metadata is a {json_kind(service_metadata)}, expected a mapping")
    parsed, skipped = containers_from_json(containers)
    if containers and not parsed:
        # Rancher lists every container, this proxy's own included: an answer in which not one
        # element is a container is of the wrong shape (another API version, a different
        # endpoint), not an environment to route; it must not blank the proxy nor flood the log.
        raise SourceError(
            f"{where}: none of the {len(containers)} containers is usable "
            f"({skipped[0].what}: {skipped[0].reason}); is this the Rancher metadata /containers?"
        )
    aliases, alias_skipped = aliases_from(service_metadata)
    return SourceData(parsed, aliases, skipped, alias_skipped, service_metadata)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def container_from_json(item: Any, index: int) -> Container | Skipped:
    """Type-check one element of /containers; a malformed one becomes a Skipped naming it."""
    if isinstance(item, dict):
        item = RancherContainer(**{key: item.get(key) for key in RancherContainer.__struct_fields__})
    elif not isinstance(item, RancherContainer):
        return Skipped(f"containers[{index}]", f"is a {type(item).__name__}, not an object")
    name = _text(item.name) or f"containers[{index}]"
    labels = item.labels or {}
    if not isinstance(labels, dict):
        return container_skipped(name, "labels is not an object")
    labels, bad_labels = text_labels(labels)
    for key in ("stack_name", "service_name", "uuid", "state"):
        value = getattr(item, key)
        if not value or not isinstance(value, str):
            return container_skipped(name, f"has no {key}")
    health = item.health_state
    if health is not None and not isinstance(health, str):
        return container_skipped(name, "health_state is not a string")
    ip = _text(item.primary_ip)
    if not ip:
        ips = item.ips
        ip = _text(ips[0]) if isinstance(ips, list) and ips else None
    return Container(
        name=name,
        uuid=item.uuid,
        stack=item.stack_name,
        service=item.service_name,
        ip=ip,
        state=item.state,
        health=health,
        labels=labels,
        bad_labels=bad_labels,
    )


def containers_from_json(items: Iterable[Any]) -> tuple[tuple[Container, ...], tuple[Skipped, ...]]:
    containers, skipped = [], []
    for index, item in enumerate(items):
        result = container_from_json(item, index)
        (skipped if isinstance(result, Skipped) else containers).append(result)
    return tuple(containers), tuple(skipped)


def aliases_from(service_metadata: dict[str, Any]) -> tuple[tuple[Alias, ...], tuple[Skipped, ...]]:
    """The aliases of `aliases: {stack: [name, ...]}`; a lone string counts as a list of one."""
    raw = service_metadata.get("aliases")
    if raw is None:
        return (), ()
    if not isinstance(raw, dict):
        return (), (Skipped("metadata aliases", "is not a mapping of stack: [names]"),)
    aliases, skipped = [], []
    for stack, names in raw.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(stack, str) or not isinstance(names, list):
            skipped.append(Skipped(f"aliases of {shown(stack)}", "is not a list of names"))
            continue
        for name in names:
            if not isinstance(name, str):
                skipped.append(Skipped(f"alias {shown(name)} of stack {shown(stack)}", "is not a string"))
                continue
            aliases.append(Alias(stack, name))
    return tuple(aliases), tuple(skipped)
