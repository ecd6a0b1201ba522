"""Fetch stage: one module per metadata source (rancher, docker, swarm, file), each returning the same SourceData
and each able to watch for changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


def retry_delay(failures: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait after `failures` failures in a row: 0.5, 1, 2, 4 ... at most `cap`."""
    return min(first * 2 ** max(failures - 1, 0), cap)


def kind(settings: Any) -> str:
    """rancher, docker, swarm or file; DISABLE_METADATA=true keeps meaning the file source."""
    return "file" if settings.disable_metadata else settings.source


def fetch(settings: Any) -> SourceData:
    source = kind(settings)
    if source == "file":
        from . import file

        return file.fetch(settings.metadata_file)
    if source == "docker":
        from . import docker

        return docker.fetch(settings)
    if source == "swarm":
        from . import swarm

        return swarm.fetch(settings)
    from . import rancher

    return rancher.fetch(settings)


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Block until `stop` is set, calling notify() whenever the source may have changed.
    Each source module has a `watch` of this shape; failures are logged and retried there."""
    source = kind(settings)
    if source == "file":
        from . import file

        file.watch(settings.metadata_file, notify, stop)
    elif source == "docker":
        from . import docker

        docker.watch(settings, notify, stop)
    elif source == "swarm":
        from . import swarm

        swarm.watch(settings, notify, stop)
    else:
        from . import rancher

        rancher.watch(settings, notify, stop)
