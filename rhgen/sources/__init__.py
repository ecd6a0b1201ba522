"""Fetch stage: one module per metadata source, each returning the same SourceData."""

from __future__ import annotations

from typing import Any

from ..errors import SourceError
from ..model import SourceData, containers_from_json


def source_data(containers: Any, service_metadata: Any, where: str) -> SourceData:
    """Check the two top-level shapes every source delivers, then type-check each container."""
    if not isinstance(containers, list):
        raise SourceError(f"{where}: containers is a {_kind(containers)}, expected a list")
    if service_metadata is None:
        service_metadata = {}
    if not isinstance(service_metadata, dict):
        raise SourceError(f"{where}: the proxy service metadata is a {_kind(service_metadata)}, expected a mapping")
    parsed, skipped = containers_from_json(containers)
    if containers and not parsed:
        # Rancher lists every container, this proxy's own included: an answer in which not one
        # element is a container is of the wrong shape (another API version, a different
        # endpoint), not an environment to route; it must not blank the proxy nor flood the log.
        raise SourceError(
            f"{where}: none of the {len(containers)} containers is usable "
            f"({skipped[0].what}: {skipped[0].reason}); is this the Rancher metadata /containers?"
        )
    return SourceData(containers=parsed, service_metadata=service_metadata, skipped=skipped)


def _kind(value: Any) -> str:
    kinds = {dict: "mapping", list: "list", str: "string", type(None): "null", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def fetch(settings: Any) -> SourceData:
    if settings.disable_metadata:
        from . import file

        return file.fetch(settings.metadata_file)
    from . import rancher

    return rancher.fetch(settings)
