"""The whole run, top to bottom, each stage called once: plan (fetch -> model -> render -> diff,
plan.py), then apply (check -> swap -> runtime API or reload, apply.py), then, with ACME_DIR,
certificates (acme.py), which come after routing and never undo it."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import fingerprint, lock, plan, reloads
from .files import folder_of, read_live
from .model import Routing
from .merge import settings_warnings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    routing: Routing | None  # None when the answers were the very bytes of the last run (plan.py)
    changed: tuple[str, ...]  # live paths that differ (dry run) or were replaced
    diff: str = ""
    reloaded: bool = False
    runtime_api: bool = False  # a map/server change applied through HAProxy's runtime API, no reload
    counts: tuple[int, int, int] = (0, 0, 0)  # hosts, backends, servers

    def summary(self, dry_run: bool = False) -> str:
        hosts, backends, servers = self.counts
        text = f"{hosts} hosts → {backends} backends, {servers} servers; "
        if self.changed:
            names = ", ".join(os.path.basename(p) for p in self.changed)
            text += f"{'would change' if dry_run else 'changed'}: {names}"
        else:
            text += "no change"
        if self.reloaded:
            text += "; reloaded"
        if self.runtime_api:
            text += "; applied through the runtime API, no reload"
        return text


def generate(settings: Any, dry_run: bool = False, allow_empty: bool = False, wait_for_drains: bool = True) -> Outcome:
    for warning in settings_warnings(settings):
        log.warning("%s", warning)
    if settings.acme_directory:
        from . import acme_state

        # haproxy -c needs the challenge map to exist, in a dry run too: an empty file in ACME_DIR,
        # never one of the files in service.
        acme_state.prepare(settings)
    if dry_run:
        return preview(settings)
    outcome, routed = route(settings, allow_empty, wait_for_drains)
    if settings.acme_directory:
        return _certificates(settings, routed, outcome, allow_empty)
    return outcome


def preview(settings: Any) -> Outcome:
    """The dry run: plan and check, write nothing (the check stages in TMPDIR), show the diff."""
    planned = plan.make(settings, tempfile.gettempdir(), fast=False)
    changed = plan.changed_files(planned.files)
    if changed:
        from . import check

        plan.warn_about_drop(settings, planned.routing)
        check.check_staged(settings.haproxy_bin, planned.staged)
    return Outcome(planned.routing, tuple(f.path for f in changed), diff=plan.unified_diff(changed), counts=planned.counts)


@contextlib.contextmanager
def _objects_kept() -> Iterator[None]:
    """No cyclic garbage collection while a run builds what it keeps until its end. Decoding, the
    model and rendering make some 100,000 objects at 10,000 containers, none of them in a cycle;
    the collector, triggered by their very number, would scan them again and again as they grow
    (about 50 ms of a changed run) and free nothing. Reference counting still frees all else."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def route(settings: Any, allow_empty: bool, wait_for_drains: bool = True) -> tuple[Outcome, plan.Plan]:
    """Routing: plan, then apply (or nothing when the inputs did not change)."""
    with _objects_kept():
        return _route(settings, allow_empty, wait_for_drains)


def _route(settings: Any, allow_empty: bool, wait_for_drains: bool) -> tuple[Outcome, plan.Plan]:
    anchor = settings.haproxy_backend_config
    planned = plan.make(settings, folder_of(anchor))
    if planned.in_service:
        lock.clean_up_if_idle(lock.own_files(settings, fingerprint.read_stamp(anchor)), anchor)
        return Outcome(planned.routing, (), counts=planned.counts), planned
    from . import apply  # the swap, the runtime API and reloads: not imported by a run that changes nothing

    applied = apply.apply(settings, planned, allow_empty, wait_for_drains)
    outcome = Outcome(planned.routing, applied.changed, reloaded=applied.reloaded, runtime_api=applied.runtime_api,
                      counts=planned.counts)
    return outcome, planned


def _certificates(settings: Any, routed: plan.Plan, outcome: Outcome, allow_empty: bool) -> Outcome:
    """Routing is in service; certificates come after it and never undo it (failures are warnings)."""
    from . import acme

    # A plan that rendered has the certificates already; the no-change shortcut did not read them.
    tls = plan.load_tls(settings, routed.source, routed.routing) if routed.in_service else routed.tls
    result = acme.run(settings, routed.routing, tls, read_live(settings.haproxy_ssl_crt_list))
    if result.issued:  # a new certificate file: the crt-list names it (one more routing run, one reload)
        again, _ = route(settings, allow_empty)
        return replace(again, changed=tuple(dict.fromkeys(outcome.changed + again.changed)),
                       reloaded=outcome.reloaded or again.reloaded)
    if result.reload_needed and settings.reload_command:
        reloads.reload(settings.reload_command, settings.haproxy_backend_config)
        return replace(outcome, reloaded=True)
    return outcome
