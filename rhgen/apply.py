"""Apply stage: put a Plan in service, under the lock: check -> swap -> runtime API or reload.

The promise: if anything fails before the swap, the files in service are untouched (swap.py);
a reload owed after a swap is never forgotten (reloads.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from . import check, draining, fingerprint, lock, plan, reloads, runtime, swap
from .errors import ApplyError
from .files import read_live

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    changed: tuple[str, ...] = ()  # live paths replaced
    reloaded: bool = False
    runtime_api: bool = False  # a map/server change applied through HAProxy's runtime API, no reload


def apply(settings: Any, planned: plan.Plan, allow_empty: bool = False, wait_for_drains: bool = True) -> Applied:
    """Swap the planned files in and get haproxy to serve them. wait_for_drains=False (the watch): servers
    removed through the runtime API finish draining in the background, not before the next change."""
    anchor = settings.haproxy_backend_config
    swap.check_folders([f.path for f in planned.files])
    with lock.exclusive_lock(anchor):
        lock.remove_stale_temps(lock.own_files(settings))
        changed = plan.changed_files(planned.files)  # again under the lock: another run may have swapped since
        stamp = plan.stamp(settings, planned)
        fingerprint.warn_about_other_writer(anchor, stamp)
        if not changed:
            fingerprint.write_stamp(anchor, stamp)
            if settings.reload_command and reloads.pending(anchor):  # owed by an earlier run
                reloads.reload(settings.reload_command, anchor)
                return Applied(reloaded=True)
            return Applied()
        _guard_against_blanking(settings, planned, allow_empty)
        plan.warn_about_drop(settings, planned.routing)
        swap.check_replaceable([f.path for f in changed])
        check.check_staged(settings.haproxy_bin, planned.staged)
        already_pending = reloads.pending(anchor)
        # The servers the running haproxy has now: the runtime API adds and removes the difference.
        old_backends = read_live(settings.haproxy_backend_config) if any(f.role == "backends" for f in changed) else None
        with reloads.owed_across(anchor, reload_follows=bool(settings.reload_command)):
            swap.swap(changed)
        paths = tuple(f.path for f in changed)
        log.info("swapped in %s", ", ".join(paths))
        fingerprint.write_stamp(anchor, stamp)
        lock.write_generation(anchor, stamp.outputs)
        # A change of the host map and of servers in existing backends goes to the running haproxy
        # through its runtime API: no reload (unless an earlier reload is still owed).
        if not already_pending and runtime.apply_change(settings, changed, old_backends):
            reloads.settled(anchor)
            if wait_for_drains:
                draining.wait()
            return Applied(paths, runtime_api=True)
        if settings.reload_command:
            reloads.reload(settings.reload_command, anchor)
            return Applied(paths, reloaded=True)
        return Applied(paths)


def _guard_against_blanking(settings: Any, planned: plan.Plan, allow_empty: bool) -> None:
    """A metadata hiccup that returns no containers must not blank a proxy in service."""
    if planned.routing.routes or allow_empty:
        return
    live = plan.count_map_entries(read_live(settings.haproxy_domain_map))
    if live:
        raise ApplyError(
            f"the new configuration routes no host while {settings.haproxy_domain_map} routes {live}; "
            "nothing changed (use --allow-empty if this is intended)"
        )
