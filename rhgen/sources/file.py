"""File source: an answers file (JSON or YAML) with `containers` and `self_service_metadata`.

RHGEN_SOURCE=file (or DISABLE_METADATA=true) with METADATA_FILE: for hosts without an
orchestrator, local runs, demos and tests. The shapes are those of the Rancher answers to
/containers and /self/service/metadata. In watch mode the file is polled (inode, size,
mtime) every POLL_INTERVAL seconds, which also sees a file replaced by rename.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import SourceError
from ..model import SourceData
from .answers import source_data


def fetch(settings: Any) -> SourceData:
    path = settings.metadata_file
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"metadata file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError):  # RecursionError: nested a few thousand deep
            raise SourceError(f"metadata file {path}: neither JSON nor YAML") from None
    if not isinstance(data, dict) or "containers" not in data:
        raise SourceError(f"metadata file {path}: expected a mapping with 'containers' and 'self_service_metadata'")
    return source_data(data["containers"], data.get("self_service_metadata"), f"metadata file {path}")


POLL_INTERVAL = 0.1


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def watch(settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Call notify() whenever the file is written, replaced, created or removed."""
    path = settings.metadata_file
    last = _signature(path)
    while not stop.wait(POLL_INTERVAL):
        current = _signature(path)
        if current != last:
            last = current
            notify()
