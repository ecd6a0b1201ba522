"""File source: an answers file (JSON or YAML) with `containers` and `self_service_metadata`.

Used with DISABLE_METADATA for local runs, demos and tests; the shapes are those of the
Rancher answers to /containers and /self/service/metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import SourceError
from ..model import SourceData
from . import source_data


def fetch(path: str) -> SourceData:
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
