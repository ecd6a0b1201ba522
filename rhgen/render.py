"""Render stage: the Jinja2 environment and the rendering of every output file.

Templates hold the HAProxy knowledge; this module only decides which template feeds
which file and what the templates see. Users override any template by putting a file of
the same name in RHGEN_TEMPLATE_DIR.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2

from . import resources
from .errors import RhgenError
from .model import Routing

if TYPE_CHECKING:
    from .certs import Tls


@dataclass(frozen=True)
class OutputFile:
    role: str  # "config", "backends", "map" (and "cert" when TLS is on)
    path: str  # the live path this content is for
    content: bytes
    mode: int  # mode of a newly created file; an existing file keeps its own
    secret: bool = False  # never shown in diffs or logs


@dataclass(frozen=True)
class Output:
    role: str
    template: str
    setting: str  # the setting holding the live path
    mode: int
    secret: bool = False


# In swap order: the main config, which refers to all the others, is replaced last.
BACKENDS = Output("backends", "backends.cfg.j2", "haproxy_backend_config", 0o644)
MAP = Output("map", "domain.map.j2", "haproxy_domain_map", 0o644)
CERT = Output("cert", "haproxy.pem.j2", "haproxy_ssl_cert", 0o600, secret=True)
CRT_LIST = Output("crtlist", "crt-list.txt.j2", "haproxy_ssl_crt_list", 0o644)
CONFIG = Output("config", "haproxy.cfg.j2", "haproxy_config", 0o644)


def outputs(tls: Tls | None) -> list[Output]:
    """The files this run produces: the PEM only when rhgen writes it, the crt-list only with TLS."""
    chosen = [BACKENDS, MAP]
    if tls is not None:
        if any(cert.write for cert in tls.certificates):
            chosen.append(CERT)
        chosen.append(CRT_LIST)
    chosen.append(CONFIG)
    return chosen


def _bind_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@functools.lru_cache(maxsize=4)
def environment(template_dir: str = "") -> jinja2.Environment:
    """One environment per template folder, so the live and the staged rendering of a run (and
    every run of `rhgen watch`) share compiled templates; Jinja2 still reloads a changed file."""
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
        autoescape=False,  # noqa: S701 - HAProxy config, not HTML; values are validated in the model  # nosec B701
    )
    env.filters["bind_host"] = _bind_host
    return env


def render_all(
    settings: Any, routing: Routing, tls: Tls | None = None, paths: Mapping[str, str] | None = None
) -> list[OutputFile]:
    """Render every output for its live path; `paths` changes what the files refer to (used for checks)."""
    chosen = outputs(tls)
    live = {out.role: getattr(settings, out.setting) for out in chosen}
    references = {**live, **(paths or {})}
    env = environment(settings.template_dir)
    written = next((cert for cert in tls.certificates if cert.write), None) if tls else None
    context = {"settings": settings, "routing": routing, "tls": tls, "certificate": written, "paths": references}
    files = []
    for out in chosen:
        try:
            text = env.get_template(out.template).render(context)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "lineno", None)
            line = f" line {where}" if where else ""
            raise RhgenError(f"template {out.template}{line}: {exc.message or exc}") from None
        files.append(OutputFile(out.role, live[out.role], text.encode("utf-8"), out.mode, out.secret))
    return files
