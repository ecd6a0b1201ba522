"""Command line: parse, call the pipeline, report. Errors are caught here once: one line, non-zero exit."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from . import __version__
from .errors import RhgenError
from .messages import SHOWN_CHARS, printable
from .merge import merge
from .settings import SETTINGS, Setting

log = logging.getLogger("rhgen")


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Messages quote metadata (container names...): never let them drive the terminal.
        return printable(super().format(record).replace(record.levelname, record.levelname.lower(), 1))


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter("rhgen: %(levelname)s: %(message)s"))
    root = logging.getLogger("rhgen")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class SettingOption(click.Option):
    """The option of one setting, also read from its environment variable."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        # click skips an empty variable; here it is a value: BIND_ADDRESS= binds every address.
        return os.environ.get(self.envvar) if isinstance(self.envvar, str) else None


def _option(setting: Setting) -> Callable[..., Any]:
    # The default is shown in --help only: values left at it come from the defaults layer (see wrapper).
    shown = setting.shown_default or None
    security = " Security-relevant." if setting.security else ""
    return click.option(
        setting.flag, setting.name, cls=SettingOption, envvar=setting.env, show_envvar=True,
        default=shown, show_default=shown is not None, metavar="VALUE", help=setting.help + security,
    )


def setting_options(command: Callable[..., Any] | None = None, *, renders: bool = True) -> Any:
    """Add --config, -v/-q and one option per setting; hand the command a merged Settings.
    renders=False: a command that renders nothing runs without STACK_DOMAIN."""
    if command is None:
        return functools.partial(setting_options, renders=renders)

    @click.option("--config", "config_file", metavar="FILE", envvar="RHGEN_CONFIG", show_envvar=True,
                  help="Override YAML file of settings.")
    @click.option("-v", "--verbose", count=True, help="Also log what changed and what was skipped.")
    @click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
    @functools.wraps(command)
    def wrapper(config_file: str | None, verbose: int, quiet: bool, **kwargs: Any) -> None:
        _setup_logging(verbose, quiet)
        source = click.get_current_context().get_parameter_source
        values = {s.name: kwargs.pop(s.name) for s in SETTINGS}
        layers: dict[Any, dict[str, Any]] = {ParameterSource.ENVIRONMENT: {}, ParameterSource.COMMANDLINE: {}}
        for name, value in values.items():
            layers.get(source(name), {})[name] = value
        try:
            settings = merge(config_file, layers[ParameterSource.ENVIRONMENT], layers[ParameterSource.COMMANDLINE],
                             renders)
            command(settings, **kwargs)
        except RhgenError as exc:
            click.echo(printable(f"rhgen: error: {exc}", lines=True), err=True)
            sys.exit(exc.exit_code)

    for setting in reversed(SETTINGS):
        wrapper = _option(setting)(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    for route in routing.routes:
        servers = backends[route.backend].servers
        lines.append(f"{route.host}  →  {route.backend}  ({route.kind})")
        for server in servers:
            proxy = f"  {server.proxy_protocol}" if server.proxy_protocol else ""
            lines.append(f"    {server.name}  {server.address}:{server.port}{proxy}  [{shown_name(server.container)}]")
    if routing.skipped:
        lines.append("skipped:")
        lines.extend(f"    {skipped.what}: {skipped.reason}" for skipped in routing.skipped)
    for line in lines:  # container names are metadata: escape sequences are shown, not obeyed
        click.echo(printable(line))


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
                "backend": route.backend,
                "kind": route.kind,
                "servers": [
                    {
                        "name": s.name,
                        "address": s.address,
                        "port": s.port,
                        "proxy_protocol": s.proxy_protocol or None,
                        "container": s.container,
                    }
                    for s in backends[route.backend].servers
                ],
            }
            for route in routing.routes
        ],
        "skipped": [{"what": s.what, "reason": s.reason} for s in routing.skipped],
    }


# --- what the entrypoint runs ----------------------------------------------------------------------


def _say(message: str) -> None:
    click.echo(printable(f"rhgen: {message}", lines=True), err=True)


@main.command()
@setting_options(renders=False)
@click.option("--wait", is_flag=True, help="Retry (1, 2, 4 … RHGEN_RETRY_MAX s) until the files exist and pass.")
def check(settings: Any, wait: bool) -> None:
    """Check the files in service with haproxy -c (exit 0 when haproxy accepts them, 1 when not).

    Files a rhgen run is swapping are read once the swap is complete. The haproxy-only mode of
    the entrypoint runs `rhgen check --wait` before it starts haproxy.
    """
    from . import haproxy_control, lock, loops
    from .merge import settings_warnings

    for warning in settings_warnings(settings):
        log.warning("%s", warning)

    def step() -> None:
        with lock.shared_lock(settings.haproxy_backend_config):
            haproxy_control.check_live(settings)

    if not wait:
        step()
    elif not loops.until_ready(step, settings, _say):
        return
    _say(f"haproxy -c accepts {settings.haproxy_config} and {settings.haproxy_backend_config}")


@main.command()
@setting_options
def prepare(settings: Any) -> None:
    """Make the first configuration haproxy starts with: generate (nothing to reload yet), then
    haproxy -c on the result, retried (1, 2, 4 … RHGEN_RETRY_MAX s) until both succeed.

    Exit 0 when ready (or stopped by SIGTERM), 2 on a settings error: retrying cannot help.
    """
    import dataclasses

    from . import haproxy_control, loops
    from .pipeline import generate as run

    first = dataclasses.replace(settings, reload_command="")

    def step() -> None:
        click.echo(run(first).summary())
        haproxy_control.check_live(first)

    loops.until_ready(step, settings, _say)


@main.command()
@setting_options(renders=False)
def reload(settings: Any) -> None:
    """Hitless reload of the haproxy the entrypoint runs (its default RELOAD_COMMAND).

    haproxy -c on the files in service (a rejected set is never sent), `reload` on the master CLI
    (HAPROXY_MASTER_SOCKET), then wait until `show proc` reports the outcome. Exit 0 when the new
    configuration serves, 1 when the previous worker keeps serving.
    """
    from . import haproxy_control

    haproxy_control.reload(settings)


@main.command("run-haproxy")
@setting_options(renders=False)
def run_haproxy(settings: Any) -> None:
    """Become haproxy (exec) in master-worker mode with the files and master socket of the settings."""
    from . import haproxy_control

    argv = haproxy_control.haproxy_argv(settings)
    haproxy_control.prepare_start(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - the operator's HAPROXY_BIN, an argument list  # nosec B606
    except OSError as exc:
        raise RhgenError(f"cannot run haproxy binary {argv[0]!r} ({exc.strerror}; HAPROXY_BIN)") from None


@main.command()
@setting_options
def schedule(settings: Any) -> None:
    """Run `rhgen generate` every RHGEN_INTERVAL seconds until SIGTERM or SIGINT (then exit 0, after
    the run in progress): the entrypoint's schedule where supercronic is missing."""
    from . import loops

    loops.schedule(settings, _say)


@main.command("watch-files")
@setting_options(renders=False)
def watch_files(settings: Any) -> None:
    """Reload haproxy whenever a generated file changes (the haproxy-only mode), until SIGTERM or SIGINT.

    Watches HAPROXY_CONFIG, HAPROXY_BACKEND_CONFIG, HAPROXY_DOMAIN_MAP, HAPROXY_SSL_CERT and
    .rhgen.generation with inotify (RHGEN_WATCH=auto|inotify) or by polling every
    RHGEN_POLL_INTERVAL s (RHGEN_WATCH=poll). A set haproxy -c rejects is not reloaded.
    """
    from . import loops

    loops.watch_files(settings, _say)
