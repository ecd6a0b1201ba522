"""Command line: the `rhgen` group, its commands for users (generate, watch, routes, certs) and the
container's (container_commands.py). Each command gets a merged Settings from options.py, which
also catches every RhgenError, once: one line, non-zero exit."""

from __future__ import annotations

import json
from typing import Any

import click

from . import __version__
from .messages import SHOWN_CHARS, printable
from .options import setting_options



# The container's commands (container_commands.COMMANDS), by name: imported only when one is run or
# listed, so that a `generate` does not build their few hundred options (about 15 ms of every run).
CONTAINER_COMMANDS = ("check", "prepare", "reload", "run-haproxy", "schedule", "watch-files")


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *CONTAINER_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in CONTAINER_COMMANDS:
            from .container_commands import COMMANDS

            return next(command for command in COMMANDS if command.name == name)
        return super().get_command(ctx, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="rhgen")
def main() -> None:
    """Keep HAProxy routing in step with running containers.

    Every setting comes from, in rising precedence: the bundled defaults.yml, an override
    YAML file (--config / RHGEN_CONFIG), environment variables, command-line flags.
    """


@main.command()
@setting_options
@click.option("--dry-run", is_flag=True, help="Render and check, write nothing, print a diff of what would change.")
@click.option("--allow-empty", is_flag=True, help="Allow a configuration that routes no host to replace one that does.")
def generate(settings: Any, dry_run: bool, allow_empty: bool) -> None:
    """Fetch metadata, render, check with haproxy -c and swap the files in atomically.

    Exit status: 0 on success (changed or not), 1 on any failure (files in service
    untouched), 2 on a usage or settings error. Metadata requests are retried
    RHGEN_RETRIES times (default 2) when refused, timed out or answered with 5xx.
    """
    from .pipeline import generate as run

    outcome = run(settings, dry_run=dry_run, allow_empty=allow_empty)
    if dry_run and outcome.diff:
        click.echo(outcome.diff, nl=False)
    click.echo(outcome.summary(dry_run))


@main.command()
@setting_options
@click.option("--allow-empty", is_flag=True, help="Allow a configuration that routes no host to replace one that does.")
def watch(settings: Any, allow_empty: bool) -> None:
    """Run generate whenever the source changes, until SIGTERM or SIGINT (then exit 0).

    Rancher: long-polls /<version>/version. Docker: follows the events stream. File: polls
    METADATA_FILE. Bursts of changes wait RHGEN_SETTLE seconds of quiet and give one run; a
    failed run keeps the configuration in service and is retried with backoff (at most 2 s); every
    RHGEN_RESYNC seconds a run happens anyway. With HAPROXY_STATS_SOCKET, host-map-only
    changes go through HAProxy's runtime API instead of a reload.
    """
    from .watch import generate_on_change

    generate_on_change(settings, allow_empty, click.echo)


@main.command()
@setting_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
def routes(settings: Any, as_json: bool) -> None:
    """Show host → backend → servers, and the containers that get no traffic, with the reason."""
    from .plan import fetch_routing

    _, routing = fetch_routing(settings)
    backends = {b.name: b for b in routing.backends}
    if as_json:
        click.echo(json.dumps(_routes_json(routing, backends), indent=2))
        return
    lines = []
    for route, path, backend in _host_paths(routing, backends):
        notes = [route.kind]
        if backend is None:
            notes.append("no container at /: 503")
        else:
            notes += ["strip"] if backend.strip else []
            notes += [f"auth: {', '.join(user for user, _ in backend.auth)}"] if backend.auth else []  # never the hashes
            notes += [f"allow: {', '.join(backend.allow)}"] if backend.allow else []
        lines.append(f"{route.host}{path}  →  {backend.name if backend else '-'}  ({', '.join(notes)})")
        for server in backend.servers if backend else ():
            proxy = f"  {server.proxy_protocol}" if server.proxy_protocol else ""
            lines.append(f"    {server.name}  {server.address}:{server.port}{proxy}  [{shown_name(server.container)}]")
    if routing.skipped:
        lines.append("skipped:")
        lines.extend(f"    {skipped.what}: {skipped.reason}" for skipped in routing.skipped)
    for line in lines:  # container names are metadata: escape sequences are shown, not obeyed
        click.echo(printable(line))


def _host_paths(routing: Any, backends: dict[str, Any]) -> list[tuple[Any, str, Any]]:
    """(route, path shown, backend or None) per host and path prefix: a host of a site with path
    routes once per prefix (longest first), any other host once, with path ""."""
    by_site: dict[str, list[Any]] = {}
    for path in routing.paths:
        by_site.setdefault(path.site, []).append(path)
    rows = []
    for route in routing.routes:
        for path in by_site.get(route.backend, ()):
            rows.append((route, path.prefix or "/", backends.get(path.backend)))
        if route.backend not in by_site:
            rows.append((route, "", backends[route.backend]))
    return rows


def shown_name(name: str) -> str:
    """A container name as `routes` shows it: as is, cut when long (messages.shown without the quotes)."""
    return name if len(name) <= SHOWN_CHARS else f"{name[:SHOWN_CHARS]}… ({len(name)} characters)"


@main.command()
@setting_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
def certs(settings: Any, as_json: bool) -> None:
    """Show, per routed host, the certificate that serves it (issuer, expiry) and its ACME state."""
    from . import acme_state
    from .names import covers
    from .tls import serving
    from .plan import fetch_routing, load_tls

    source, routing = fetch_routing(settings)
    tls = load_tls(settings, source, routing)
    state = acme_state.read_state(settings) if settings.acme_directory else {}
    rows = []
    for host in sorted({route.host for route in routing.routes}):
        cert = serving(tls, host) if tls else None
        mine = cert if cert is not None and covers(cert.names, host) else None
        rows.append({
            "host": host,
            "certificate": cert.path if cert else None,
            "covers": mine is not None,
            "issuer": mine.issuer if mine else None,
            "not_after": f"{mine.not_after:%Y-%m-%d %H:%M} UTC" if mine else None,
            "acme": acme_state.status(settings, host, mine, state),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["covers"]:
            served = f"{row['certificate']}  issuer {row['issuer']}  until {row['not_after']}"
        elif row["certificate"]:
            served = f"no certificate names it (the default {row['certificate']} answers)"
        else:
            served = "no certificate (HTTP only)"
        click.echo(f"{row['host']}  {served}")
        click.echo(f"    ACME: {row['acme']}")


def _routes_json(routing: Any, backends: dict[str, Any]) -> dict[str, Any]:
    return {
        "routes": [
            {
                "host": route.host,
                "path": path or "/",
                "backend": backend.name if backend else None,
                "kind": route.kind,
                "route": route.route or None,
                "strip": bool(backend and backend.strip),
                "auth": [user for user, _ in backend.auth] if backend else [],  # user names, never the hashes
                "allow": list(backend.allow) if backend else [],
                "servers": [
                    {
                        "name": s.name,
                        "address": s.address,
                        "port": s.port,
                        "proxy_protocol": s.proxy_protocol or None,
                        "container": s.container,
                    }
                    for s in (backend.servers if backend else ())
                ],
            }
            for route, path, backend in _host_paths(routing, backends)
        ],
        "skipped": [{"what": s.what, "reason": s.reason} for s in routing.skipped],
    }
