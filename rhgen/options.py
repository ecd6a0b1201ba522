"""How every command gets its settings: --config, -v/-q and one click option per setting (with
its environment variable), merged into one Settings; a RhgenError leaves as one line and its
exit status. The one place errors are caught."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from .errors import RhgenError
from .merge import merge
from .messages import printable
from .settings import SETTINGS, Setting


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Messages quote metadata (container names...): never let them drive the terminal.
        return printable(super().format(record).replace(record.levelname, record.levelname.lower(), 1))


def setup_logging(verbose: int, quiet: bool) -> None:
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
        setup_logging(verbose, quiet)
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
