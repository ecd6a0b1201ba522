"""The whole run, top to bottom: fetch -> model -> render -> check -> swap -> reload."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import apply, render, runtime, sources
from .errors import ApplyError
from .model import Routing, build_routing

if TYPE_CHECKING:
    from .certs import Tls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    routing: Routing
    changed: tuple[str, ...]  # live paths that differ (dry run) or were replaced
    diff: str = ""
    reloaded: bool = False
    runtime_api: bool = False  # a host-map-only change applied through HAProxy's runtime API, no reload


@dataclass(frozen=True)
class Model:
    routing: Routing
    tls: Tls | None


def build_model(settings: Any) -> Model:
    """Fetch from the configured source, build the routing model and, with TLS, the certificates;
    warn about what is skipped."""
    source = sources.fetch(settings)
    routing = build_routing(source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label)
    for skipped in routing.skipped:
        if skipped.warn:
            log.warning("%s: %s; skipped", skipped.what, skipped.reason)
    tls = None
    if settings.enable_ssl:
        from . import certs  # cryptography is slow to import; only TLS runs pay for it

        tls = certs.collect(settings, source.service_metadata)
        certs.report_uncovered(tls, settings.stack_domain, (route.host for route in routing.routes))
    return Model(routing, tls)


def generate(settings: Any, dry_run: bool = False, allow_empty: bool = False) -> Outcome:
    model = build_model(settings)
    routing = model.routing
    files = render.render_all(settings, routing, model.tls)
    paths = [f.path for f in files]

    def render_for(staged: dict[str, str]) -> list[render.OutputFile]:
        return render.render_all(settings, routing, model.tls, paths=staged)

    roles = [f.role for f in files]
    if dry_run:
        changed = apply.changed_files(files)
        if changed:
            apply.check_config(settings.haproxy_bin, render_for, roles)
        return Outcome(routing, tuple(f.path for f in changed), diff=apply.unified_diff(changed))

    apply.check_folders(paths)
    with apply.exclusive_lock(settings.haproxy_backend_config):
        apply.remove_stale_temps(paths)
        changed = apply.changed_files(files)
        if not changed:
            return Outcome(routing, ())
        _guard_against_blanking(settings, routing, allow_empty)
        apply.check_config(settings.haproxy_bin, render_for, roles)
        apply.swap(changed)
        log.info("swapped in %s", ", ".join(f.path for f in changed))
        if runtime.apply_map_change(settings, changed):
            return Outcome(routing, tuple(f.path for f in changed), runtime_api=True)
        if settings.reload_command:
            apply.run_reload(settings.reload_command)
            return Outcome(routing, tuple(f.path for f in changed), reloaded=True)
    return Outcome(routing, tuple(f.path for f in changed))


def _guard_against_blanking(settings: Any, routing: Routing, allow_empty: bool) -> None:
    """A metadata hiccup that returns no containers must not blank a proxy in service."""
    if routing.routes or allow_empty:
        return
    live = apply.count_map_entries(apply.read_live(settings.haproxy_domain_map))
    if live:
        raise ApplyError(
            f"the new configuration routes no host while {settings.haproxy_domain_map} routes {live}; "
            "nothing changed (use --allow-empty if this is intended)"
        )
