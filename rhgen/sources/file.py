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

import msgspec

from ..errors import SourceError
from ..model import SourceData
from .answers import Answers, RancherContainer, source_data


class _AnswersFile(msgspec.Struct, gc=False):
    """The common file: JSON, read straight into the fields the model needs (answers.py says why)."""

    containers: list[RancherContainer]
    self_service_metadata: Any = None


_FILE = msgspec.json.Decoder(_AnswersFile)


def fetch(settings: Any) -> SourceData:
    return fetch_answers(settings).decode()


def fetch_answers(settings: Any) -> Answers:
    path = settings.metadata_file
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"metadata file {path}: cannot read ({exc.strerror or exc})") from None
    held = [body]
    return Answers((body,), lambda: _decode(path, held.pop()))  # popped: gone once parsed (rancher.py)


def _decode(path: str, body: bytes) -> SourceData:
    try:
        typed = _FILE.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass  # YAML, or JSON of another shape: the generic way below names what is wrong
    else:
        return source_data(typed.containers, typed.self_service_metadata, f"metadata file {path}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"metadata file {path}: cannot read ({exc})") from None
    import yaml  # only for files that are not JSON

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
