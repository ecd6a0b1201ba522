"""The commands the container's entrypoint runs beside haproxy, usable on their own: check,
prepare, reload, run-haproxy, schedule, watch-files. cli.py adds them to the `rhgen` group."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from .errors import RhgenError
from .messages import printable
from .options import setting_options

log = logging.getLogger("rhgen")


def _say(message: str) -> None:
    click.echo(printable(f"rhgen: {message}", lines=True), err=True)


@click.command()
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


@click.command()
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


@click.command()
@setting_options(renders=False)
def reload(settings: Any) -> None:
    """Hitless reload of the haproxy the entrypoint runs (its default RELOAD_COMMAND).

    haproxy -c on the files in service (a rejected set is never sent), `reload` on the master CLI
    (HAPROXY_MASTER_SOCKET), then wait until `show proc` reports the outcome. Exit 0 when the new
    configuration serves, 1 when the previous worker keeps serving.
    """
    from . import haproxy_control

    haproxy_control.reload(settings)


@click.command("run-haproxy")
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


@click.command()
@setting_options
def schedule(settings: Any) -> None:
    """Run `rhgen generate` every RHGEN_INTERVAL seconds until SIGTERM or SIGINT (then exit 0, after
    the run in progress): the entrypoint's schedule where supercronic is missing."""
    from . import loops

    loops.schedule(settings, _say)


@click.command("watch-files")
@setting_options(renders=False)
def watch_files(settings: Any) -> None:
    """Reload haproxy whenever a generated file changes (the haproxy-only mode), until SIGTERM or SIGINT.

    Watches HAPROXY_CONFIG, HAPROXY_BACKEND_CONFIG, HAPROXY_DOMAIN_MAP, HAPROXY_SSL_CERT and
    .rhgen.generation with inotify (RHGEN_WATCH=auto|inotify) or by polling every
    RHGEN_POLL_INTERVAL s (RHGEN_WATCH=poll). A set haproxy -c rejects is not reloaded.
    """
    from . import loops

    loops.watch_files(settings, _say)


COMMANDS = (check, prepare, reload, run_haproxy, schedule, watch_files)
