"""The whole run, top to bottom: fetch -> model -> render -> check -> swap -> reload."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import apply, fingerprint, runtime, sources
from .errors import ApplyError
from .model import Routing, SourceData
from .routing import build_routing, incumbents_from
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
    """Fetch from the configured source and build the routing model, warning about what is skipped.
    Whoever serves a contested host or server name in the live files keeps it."""
    source = sources.fetch(settings)
    incumbents = incumbents_from(
        apply.read_live(settings.haproxy_domain_map), apply.read_live(settings.haproxy_backend_config)
    )
    routing = build_routing(
        source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label, incumbents
    )
    for skipped in routing.skipped:
        if skipped.warn:
            log.warning("%s: %s; skipped", skipped.what, skipped.reason)
    return source, routing


def load_tls(settings: Any, source: SourceData, routing: Routing) -> Tls | None:
    if not settings.enable_ssl:
        return None
    from . import certs  # cryptography is slow to import: only runs that render TLS pay for it

    tls = certs.collect(settings, source.service_metadata)
    if not tls.certificates:  # ACME is on and has issued nothing yet: HTTP only until it has
        log.warning("ENABLE_SSL: no certificate yet; HTTPS starts once ACME has issued one")
        return None
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
        config=fingerprint.settings_digest(settings),
    )


def generate(settings: Any, dry_run: bool = False, allow_empty: bool = False) -> Outcome:
    for warning in settings_warnings(settings):
        log.warning("%s", warning)
    if not settings.acme_directory:
        return _route(settings, dry_run, allow_empty)[0]
    from . import acme

    # haproxy -c needs the challenge map to exist, in a dry run too: an empty file in ACME_DIR,
    # never one of the files in service.
    acme.prepare(settings)
    if dry_run:
        return _route(settings, dry_run, allow_empty)[0]
    outcome, source = _route(settings, dry_run, allow_empty)
    # Routing is in service; certificates come after it and never undo it (failures are warnings).
    tls = load_tls(settings, source, outcome.routing)
    result = acme.run(settings, outcome.routing, tls, apply.read_live(settings.haproxy_ssl_crt_list))
    if result.issued:  # a new certificate file: the crt-list names it (one reload)
        again, _ = _route(settings, dry_run, allow_empty)
        return replace(again, changed=tuple(dict.fromkeys(outcome.changed + again.changed)),
                       reloaded=outcome.reloaded or again.reloaded)
    if result.reload_needed and settings.reload_command:
        apply.run_reload(settings.reload_command, settings.haproxy_backend_config)
        return replace(outcome, reloaded=True)
    return outcome


def _route(settings: Any, dry_run: bool, allow_empty: bool) -> tuple[Outcome, SourceData]:
    """Routing: render, check, swap, reload (or nothing when the inputs did not change)."""
    source, routing = fetch_routing(settings)
    inputs = fingerprint.inputs_digest(settings, routing, source.service_metadata)
    anchor = settings.haproxy_backend_config  # the lock, the fingerprint and the check's staging sit beside it
    if settings.acme_directory:  # issued and renewed certificates are inputs too
        inputs = fingerprint.outputs_digest([inputs.encode(), *_acme_files(settings)])
    if (
        not dry_run
        and fingerprint.live_files_match(anchor, inputs)
        and not apply.reload_pending(anchor)
    ):
        apply.clean_up_if_idle(own_files(settings, fingerprint.read_stamp(anchor)), anchor)
        return Outcome(routing, ()), source

    from . import render

    model = Model(routing, load_tls(settings, source, routing))
    own_config = _users_config(settings)
    files = render.render_all(settings, routing, model.tls, own_config=own_config)
    roles = [f.role for f in files]

    def render_for(staged: dict[str, str]) -> list[OutputFile]:
        return render.render_all(settings, routing, model.tls, paths=staged, own_config=own_config)

    if dry_run:
        changed = apply.changed_files(files)
        if changed:
            _warn_about_drop(settings, routing)
            apply.check_config(settings.haproxy_bin, render_for, roles)
        return Outcome(routing, tuple(f.path for f in changed), diff=apply.unified_diff(changed)), source

    paths = [f.path for f in files]
    apply.check_folders(paths)
    with apply.exclusive_lock(anchor):
        apply.remove_stale_temps(own_files(settings))
        changed = apply.changed_files(files)
        stamp = stamp_for(settings, model, inputs, files)
        fingerprint.warn_about_other_writer(anchor, stamp)
        if changed:
            _guard_against_blanking(settings, routing, allow_empty)
            _warn_about_drop(settings, routing)
            apply.check_replaceable([f.path for f in changed])
            apply.check_config(settings.haproxy_bin, render_for, roles, folder=os.path.dirname(os.path.abspath(anchor)))
            already_pending = apply.reload_pending(anchor)
            # The servers the running haproxy has now: the runtime API adds and removes the difference.
            old_backends = apply.read_live(settings.haproxy_backend_config) if any(f.role == "backends" for f in changed) else None
            apply.swap(changed, anchor, reload_follows=bool(settings.reload_command))
            log.info("swapped in %s", ", ".join(f.path for f in changed))
            fingerprint.write_stamp(anchor, stamp)
            apply.write_generation(anchor, stamp.outputs)
            # A change of the host map and of servers in existing backends goes to the running haproxy
            # through its runtime API: no reload (unless an earlier reload is still owed).
            if not already_pending and runtime.apply_change(settings, changed, old_backends):
                apply.clear_reload_pending(anchor)
                return Outcome(routing, tuple(f.path for f in changed), runtime_api=True), source
        else:
            fingerprint.write_stamp(anchor, stamp)
        if settings.reload_command and (changed or apply.reload_pending(anchor)):
            apply.run_reload(settings.reload_command, anchor)
            return Outcome(routing, tuple(f.path for f in changed), reloaded=True), source
    return Outcome(routing, tuple(f.path for f in changed)), source


def _acme_files(settings: Any) -> list[bytes]:
    from . import acme

    folder = acme.cert_folder(settings)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith("."):
            try:
                with open(os.path.join(folder, name), "rb") as handle:
                    found.append(name.encode() + b"\0" + handle.read())
            except OSError:
                found.append(name.encode() + b"\0missing")
    return found


def own_files(settings: Any, stamp: fingerprint.Stamp | None = None) -> list[str]:
    """Every file rhgen writes for these settings (with the paths a stamp recorded), and its own
    markers: where killed runs leave temp files."""
    anchor = settings.haproxy_backend_config
    written = list(stamp.paths) if stamp else []
    for name in ("haproxy_config", "haproxy_backend_config", "haproxy_domain_map", "haproxy_ssl_cert", "haproxy_ssl_crt_list"):
        written.append(getattr(settings, name))
    markers = [fingerprint.stamp_path(anchor), apply.generation_path(anchor)]
    return list(dict.fromkeys(written + markers))


def _users_config(settings: Any) -> bytes | None:
    """The user's own haproxy.cfg, when the live one carries no rhgen header (never overwritten)."""
    from . import render

    live = apply.read_live(settings.haproxy_config)
    if live is None or render.is_generated(live):
        return None
    gaps = render.own_config_gaps(live, settings.haproxy_domain_map)
    if gaps:
        log.warning(
            "%s is your own (no rhgen header), so rhgen leaves it alone, but it %s: unknown hosts may get no answer",
            settings.haproxy_config, " and ".join(gaps),
        )
    return live


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
