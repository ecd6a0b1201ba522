"""The whole run, top to bottom: fetch -> model -> render -> check -> swap -> reload."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import apply, fingerprint, runtime, sources
from .errors import ApplyError
from .model import Routing, SourceData, build_routing
from .settings import settings_warnings

if TYPE_CHECKING:
    from .certs import Tls
    from .render import OutputFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    routing: Routing
    changed: tuple[str, ...]  # live paths that differ (dry run) or were replaced
    diff: str = ""
    reloaded: bool = False
    runtime_api: bool = False  # a map/server change applied through HAProxy's runtime API, no reload


@dataclass(frozen=True)
class Model:
    routing: Routing
    tls: Tls | None


def fetch_routing(settings: Any) -> tuple[SourceData, Routing]:
    """Fetch from the configured source and build the routing model, warning about what is skipped."""
    source = sources.fetch(settings)
    routing = build_routing(source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label)
    for skipped in routing.skipped:
        if skipped.warn:
            log.warning("%s: %s; skipped", skipped.what, skipped.reason)
    return source, routing


def load_tls(settings: Any, source: SourceData, routing: Routing) -> Tls | None:
    if not settings.enable_ssl:
        return None
    from . import certs  # cryptography is slow to import: only runs that render TLS pay for it

    tls = certs.collect(settings, source.service_metadata)
    certs.report_uncovered(tls, settings.stack_domain, (route.host for route in routing.routes))
    return tls


def stamp_for(settings: Any, model: Model, inputs: str, files: list[OutputFile]) -> fingerprint.Stamp:
    recheck = 0
    if model.tls:  # certificates are validated again once they come near expiry
        warn_seconds = settings.ssl_expiry_warning_days * 86400
        recheck = max(1, int(min(cert.not_after.timestamp() for cert in model.tls.certificates)) - warn_seconds)
    return fingerprint.Stamp(
        inputs=inputs,
        outputs=fingerprint.outputs_digest([f.content for f in files]),
        recheck_after=recheck,
        paths=tuple(f.path for f in files),
    )


def generate(settings: Any, dry_run: bool = False, allow_empty: bool = False) -> Outcome:
    for warning in settings_warnings(settings):
        log.warning("%s", warning)
    source, routing = fetch_routing(settings)
    inputs = fingerprint.inputs_digest(settings, routing, source.service_metadata)
    if (
        not dry_run
        and fingerprint.live_files_match(settings.haproxy_backend_config, inputs)
        and not apply.reload_pending(settings.haproxy_backend_config)
    ):
        return Outcome(routing, ())

    from . import render

    model = Model(routing, load_tls(settings, source, routing))
    files = render.render_all(settings, routing, model.tls)
    roles = [f.role for f in files]

    def render_for(staged: dict[str, str]) -> list[OutputFile]:
        return render.render_all(settings, routing, model.tls, paths=staged)

    if dry_run:
        changed = apply.changed_files(files)
        if changed:
            _warn_about_drop(settings, routing)
            apply.check_config(settings.haproxy_bin, render_for, roles)
        return Outcome(routing, tuple(f.path for f in changed), diff=apply.unified_diff(changed))

    paths = [f.path for f in files]
    anchor = settings.haproxy_backend_config  # the lock, the fingerprint and the check's staging sit beside it
    apply.check_folders(paths)
    with apply.exclusive_lock(anchor):
        apply.remove_stale_temps([*paths, fingerprint.stamp_path(anchor)])
        changed = apply.changed_files(files)
        if changed:
            _guard_against_blanking(settings, routing, allow_empty)
            _warn_about_drop(settings, routing)
            apply.check_config(settings.haproxy_bin, render_for, roles, folder=os.path.dirname(os.path.abspath(anchor)))
            already_pending = apply.reload_pending(anchor)
            # The servers the running haproxy has now: the runtime API adds and removes the difference.
            old_backends = apply.read_live(settings.haproxy_backend_config) if any(f.role == "backends" for f in changed) else None
            apply.swap(changed, anchor, reload_follows=bool(settings.reload_command))
            log.info("swapped in %s", ", ".join(f.path for f in changed))
            fingerprint.write_stamp(anchor, stamp_for(settings, model, inputs, files))
            # A change of the host map and of servers in existing backends goes to the running haproxy
            # through its runtime API: no reload (unless an earlier reload is still owed).
            if not already_pending and runtime.apply_change(settings, changed, old_backends):
                apply.clear_reload_pending(anchor)
                return Outcome(routing, tuple(f.path for f in changed), runtime_api=True)
        else:
            fingerprint.write_stamp(anchor, stamp_for(settings, model, inputs, files))
        if settings.reload_command and (changed or apply.reload_pending(anchor)):
            apply.run_reload(settings.reload_command, anchor)
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


def _warn_about_drop(settings: Any, routing: Routing) -> None:
    """A sudden loss of many routes is more often a metadata or label accident than a plan: say so."""
    live = apply.count_map_entries(apply.read_live(settings.haproxy_domain_map))
    new = len(routing.routes)
    if live and (live - new) * 100 > settings.drop_warning * live:
        log.warning(
            "routed hosts drop from %d to %d (%d %% fewer; RHGEN_DROP_WARNING is %d %%)",
            live, new, (live - new) * 100 // live, settings.drop_warning,
        )
