"""Plan stage: fetch -> model -> render -> diff, writing nothing. The Plan says what the files in
service should hold; apply.py puts it in service, a dry run only shows it.

Whoever serves a contested host or server name in the live files keeps it (incumbents), so the
plan reads the live files; that, and reading certificates, is all the I/O it does.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import fingerprint, reloads, sources
from .files import read_live
from .model import Routing, SourceData

if TYPE_CHECKING:
    from .tls import Tls
    from .render import OutputFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    source: SourceData | None  # None (and routing None) when the answers were the same bytes as last time;
    # without its containers, which are all in `routing` (only the proxy's own metadata is read of it)
    routing: Routing | None
    inputs: str  # digest of everything the files are made from (fingerprint.py)
    tls: Tls | None = None
    files: tuple[OutputFile, ...] = ()  # the new set for the live paths; () when the live files already are it
    staged: tuple[OutputFile, ...] = ()  # the same set for a staging folder, each file naming its staged siblings
    counts: tuple[int, int, int] = (0, 0, 0)  # hosts, backends, servers

    @property
    def in_service(self) -> bool:
        """The live files were made from these very inputs and are unchanged since: nothing to do."""
        return not self.files


def make(settings: Any, staging_parent: str, fast: bool = True) -> Plan:
    """The plan for these settings; `fast` allows the no-change shortcuts (not in a dry run).
    The staged copy is rendered for a folder in `staging_parent` that the check creates."""
    anchor = settings.haproxy_backend_config  # the lock, the fingerprint and the check's staging sit beside it
    fetch_answers = getattr(sources.source_for(settings), "fetch_answers", None)
    answers = fetch_answers(settings) if fetch_answers else None
    key = ""
    if fast and answers is not None and not settings.acme_directory:  # ACME needs the model on every run
        key = fingerprint.answers_key(settings, answers.raw)
        known = fingerprint.read_remembered(anchor)
        if known and known.key == key and fingerprint.live_files_match(anchor, known.inputs) and not reloads.pending(anchor):
            for warning in known.warnings:
                log.warning("%s", warning)
            return Plan(None, None, known.inputs, counts=known.counts)
    decode = answers.decode if answers is not None else None
    answers = None  # decode() lets go of the bytes (6 MB at 10,000 containers) once it has parsed them
    with _warnings() as warned:
        source, routing = fetch_routing(settings, decode)
    decode = None
    # Once routed, only the proxy's own metadata is read of the source (certificates): the
    # containers (8 MB at 10,000) go now, not after rendering and swapping.
    source = replace(source, containers=())
    inputs = fingerprint.inputs_digest(settings, routing, source.service_metadata)
    if settings.acme_directory:  # issued and renewed certificates are inputs too
        inputs = fingerprint.outputs_digest([inputs.encode(), *_acme_files(settings)])
    counts = (len(routing.routes), len(routing.backends), routing.server_count)
    if fast and fingerprint.live_files_match(anchor, inputs) and not reloads.pending(anchor):
        if key:  # the model of these bytes is the one in service: the next run with them may skip it
            fingerprint.remember(anchor, fingerprint.Remembered(key, inputs, counts, tuple(warned)))
        return Plan(source, routing, inputs, counts=counts)

    from . import check, render  # imported only by runs that render: the no-change run stops above

    tls = load_tls(settings, source, routing)
    own_config = _users_config(settings)
    roles = [out.role for out in render.outputs(tls)]
    paths = check.staged_paths(check.staging_folder(staging_parent), roles)
    files, staged = render.render_live_and_staged(settings, routing, tls, paths, own_config)
    staged_files = tuple(replace(f, path=paths[f.role]) for f in staged)
    return Plan(source, routing, inputs, tls, tuple(files), staged_files, counts)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().replace("\n", " "))


@contextlib.contextmanager
def _warnings() -> Iterator[list[str]]:
    """The warnings logged meanwhile (still logged as ever), for the shortcut to say them again."""
    collector = _Collector()
    logger = logging.getLogger("rhgen")
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


def fetch_routing(settings: Any, decode: Callable[[], SourceData] | None = None) -> tuple[SourceData, Routing]:
    """Fetch from the configured source (or decode what it fetched) and build the routing model,
    warning about what is skipped. Whoever serves a contested host or server name in the live files keeps it."""
    from .routing import build_routing, incumbents_from  # not needed by a run whose answers are known

    source = decode() if decode is not None else sources.fetch(settings)
    incumbents = incumbents_from(read_live(settings.haproxy_domain_map), read_live(settings.haproxy_backend_config))
    routing = build_routing(
        source, settings.stack_domain, settings.rancher_label, settings.rancher_proxy_label, incumbents,
        settings.route_host,
    )
    for skipped in routing.skipped:
        if skipped.warn:
            log.warning("%s: %s; skipped", skipped.what, skipped.reason)
    return source, routing


def load_tls(settings: Any, source: SourceData, routing: Routing) -> Tls | None:
    if not settings.enable_ssl:
        return None
    from . import tls as certificates  # cryptography is slow to import: only runs that render TLS pay for it

    tls = certificates.collect(settings, source.service_metadata)
    if not tls.certificates:  # ACME is on and has issued nothing yet: HTTP only until it has
        log.warning("ENABLE_SSL: no certificate yet; HTTPS starts once ACME has issued one")
        return None
    certificates.report_uncovered(tls, settings.stack_domain, (route.host for route in routing.routes))
    return tls


def stamp(settings: Any, plan: Plan) -> fingerprint.Stamp:
    """What the fingerprint records once this plan is in service."""
    recheck = 0
    if plan.tls:  # certificates are validated again once they come near expiry
        warn_seconds = settings.ssl_expiry_warning_days * 86400
        recheck = max(1, int(min(cert.not_after.timestamp() for cert in plan.tls.certificates)) - warn_seconds)
    return fingerprint.Stamp(
        inputs=plan.inputs,
        outputs=fingerprint.outputs_digest([f.content for f in plan.files]),
        recheck_after=recheck,
        paths=tuple(f.path for f in plan.files),
        config=fingerprint.settings_digest(settings),
    )


# --- the diff against the live files -----------------------------------------------------------


def changed_files(files: Sequence[OutputFile]) -> list[OutputFile]:
    return [f for f in files if read_live(f.path) != f.content]


def count_map_entries(content: bytes | None) -> int:
    if not content:
        return 0
    return sum(1 for line in content.splitlines() if line.strip() and not line.lstrip().startswith(b"#"))


def unified_diff(files: Sequence[OutputFile]) -> str:
    """A diff of every changed file against the live one; secret files say only that they change."""
    import difflib  # dry runs only

    parts = []
    for output in files:
        if os.path.islink(output.path):  # never show what a link points at: it may be any file
            link = os.readlink(output.path)
            parts.append(
                f"--- {output.path}\n+++ {output.path}\n"
                f"@@ {output.path} is a symbolic link to {link}; rhgen would replace the link with a file @@\n"
            )
            continue
        old = read_live(output.path)
        if output.secret:
            parts.append(f"--- {output.path}\n+++ {output.path}\n@@ contents hidden: key material @@\n")
            continue
        old_lines = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new_lines = output.content.decode("utf-8").splitlines(keepends=True)
        parts.append(
            "".join(
                difflib.unified_diff(
                    old_lines, new_lines,
                    fromfile=output.path if old is not None else "/dev/null",
                    tofile=output.path,
                )
            )
        )
    return "".join(parts)


def warn_about_drop(settings: Any, routing: Routing) -> None:
    """A sudden loss of many routes is more often a metadata or label accident than a plan: say so."""
    live = count_map_entries(read_live(settings.haproxy_domain_map))
    new = len(routing.routes)
    if live and (live - new) * 100 > settings.drop_warning * live:
        log.warning(
            "routed hosts drop from %d to %d (%d %% fewer; RHGEN_DROP_WARNING is %d %%)",
            live, new, (live - new) * 100 // live, settings.drop_warning,
        )


# --- inputs ------------------------------------------------------------------------------------


def _acme_files(settings: Any) -> list[bytes]:
    from . import acme_state

    folder = acme_state.cert_folder(settings)
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


def _users_config(settings: Any) -> bytes | None:
    """The user's own haproxy.cfg, when the live one carries no rhgen header (never overwritten)."""
    from . import render

    live = read_live(settings.haproxy_config)
    if live is None or render.is_generated(live):
        return None
    gaps = render.own_config_gaps(live, settings.haproxy_domain_map)
    if gaps:
        log.warning(
            "%s is your own (no rhgen header), so rhgen leaves it alone, but it %s: unknown hosts may get no answer",
            settings.haproxy_config, " and ".join(gaps),
        )
    return live
