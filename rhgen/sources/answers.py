"""The Rancher shapes, read by the rancher and file sources: /containers (a list of container
objects) and /self/service/metadata (the proxy's own service: aliases, ssl_cert, ssl_key).

Untrusted JSON becomes model objects here: a malformed container or alias becomes a Skipped
naming it; an answer of the wrong shape as a whole is a SourceError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import SourceError
from ..messages import shown
from ..model import Alias, Container, Skipped, SourceData, json_kind, text_labels


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
    if not isinstance(item, dict):
        return Skipped(f"containers[{index}]", f"is a {type(item).__name__}, not an object")
    name = _text(item.get("name")) or f"containers[{index}]"
    what = f"container {shown(name)}"
    labels = item.get("labels") or {}
    if not isinstance(labels, dict):
        return Skipped(what, "labels is not an object")
    labels, bad_labels = text_labels(labels)
    for key in ("stack_name", "service_name", "uuid", "state"):
        if not _text(item.get(key)):
            return Skipped(what, f"has no {key}")
    health = item.get("health_state")
    if health is not None and not isinstance(health, str):
        return Skipped(what, "health_state is not a string")
    ip = _text(item.get("primary_ip"))
    if not ip:
        ips = item.get("ips")
        ip = _text(ips[0]) if isinstance(ips, list) and ips else None
    return Container(
        name=name,
        uuid=item["uuid"],
        stack=item["stack_name"],
        service=item["service_name"],
        ip=ip,
        state=item["state"],
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
