"""Render stage: the Jinja2 environment and the rendering of every output file.

Templates hold the HAProxy knowledge; this module only decides which template feeds
which file and what the templates see. Users override any template by putting a file of
the same name in RHGEN_TEMPLATE_DIR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from . import resources
from .errors import RhgenError
from .model import Routing


@dataclass(frozen=True)
class OutputFile:
    role: str  # "config", "backends", "map" (and "cert" when TLS is on)
    path: str  # the live path this content is for
    content: bytes
    mode: int  # mode of a newly created file; an existing file keeps its own
    secret: bool = False  # never shown in diffs or logs


# role -> (template name, setting holding the live path, mode of a new file)
OUTPUTS = (
    ("backends", "backends.cfg.j2", "haproxy_backend_config", 0o644),
    ("map", "domain.map.j2", "haproxy_domain_map", 0o644),
    ("config", "haproxy.cfg.j2", "haproxy_config", 0o644),
)


def live_paths(settings: Any) -> dict[str, str]:
    return {role: getattr(settings, setting) for role, _, setting, _ in OUTPUTS}


def _bind_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def environment(template_dir: str = "") -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir:
        loaders.append(jinja2.FileSystemLoader(template_dir))
    loaders.append(jinja2.FileSystemLoader(str(resources.template_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - HAProxy config, not HTML; values are validated in the model
    )
    env.filters["bind_host"] = _bind_host
    return env


def render_all(settings: Any, routing: Routing, paths: Mapping[str, str] | None = None) -> list[OutputFile]:
    """Render every output for its live path; `paths` changes what the files refer to (used for checks)."""
    live = live_paths(settings)
    references = {**live, **(paths or {})}
    env = environment(settings.template_dir)
    context = {"settings": settings, "routing": routing, "paths": references}
    files = []
    for role, template_name, _, mode in OUTPUTS:
        try:
            text = env.get_template(template_name).render(context)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "lineno", None)
            line = f" line {where}" if where else ""
            raise RhgenError(f"template {template_name}{line}: {exc.message or exc}") from None
        files.append(OutputFile(role=role, path=live[role], content=text.encode("utf-8"), mode=mode))
    return files
