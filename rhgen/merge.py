"""Merge stage: defaults.yml < override YAML (RHGEN_CONFIG / --config) < environment < flags,
each value validated by its setting's parser -> one frozen Settings, or a SettingsError naming
the setting and the layer it came from. What the settings are is declared in settings.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

try:  # the C build of the safe loader: same documents, a fifth of the start-up cost
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

from .errors import SettingsError
from .messages import shown as quoted
from .settings import BY_NAME, DEFAULTS, PATH_SETTINGS, SETTINGS, Kind, Settings
from .quantities import YamlNonDecimal
from .validators import is_docker_host

_PLAIN_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")


def _non_decimal_integers(text: str) -> dict[Any, YamlNonDecimal]:
    """Top-level values YAML 1.1 reads as integers although not written in plain decimal, as written."""
    root = yaml.compose(text, Loader=SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return {}
    return {
        key.value: YamlNonDecimal(value.value)
        for key, value in root.value
        if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode)
        and value.tag == "tag:yaml.org,2002:int" and not _PLAIN_DECIMAL.fullmatch(value.value)
    }


def read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SettingsError(f"settings file {path}:{where} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path}: expected a mapping of setting: value")
    data.update(_non_decimal_integers(text))
    unknown = sorted(str(k) for k in data if k not in BY_NAME)
    if unknown:
        raise SettingsError(f"settings file {path}: unknown setting {quoted(unknown[0])}")
    # Relative paths in a file mean relative to that file, so a config folder can move.
    for name in PATH_SETTINGS & data.keys():
        value = data[name]
        if isinstance(value, str) and value and not os.path.isabs(value):
            data[name] = str(path.resolve().parent / value)
    return data


def load_settings(
    override_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    renders: bool = True,
) -> Settings:
    """Read the environment (RHGEN_CONFIG and each setting's variable), then merge as `merge` does."""
    environ = os.environ if environ is None else environ
    if override_file is None:
        override_file = environ.get("RHGEN_CONFIG") or None
    return merge(override_file, {s.name: environ[s.env] for s in SETTINGS if s.env in environ}, flags or {}, renders)


def merge(
    override_file: str | None, from_environment: Mapping[str, Any], from_flags: Mapping[str, Any], renders: bool = True
) -> Settings:
    """Merge the four layers and validate every value; raise SettingsError naming the first bad one.
    renders=False: for commands that only check and reload the files in service (the haproxy
    container of the sidekick layout), where STACK_DOMAIN, needed only to render, may be unset."""
    layers: list[tuple[str, Mapping[str, Any]]] = [("defaults.yml", DEFAULTS)]
    if override_file:
        layers.append((f"settings file {override_file}", read_yaml_file(Path(override_file))))
    layers.append(("environment", from_environment))
    layers.append(("command line", {k: v for k, v in from_flags.items() if v is not None}))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer_name, layer in layers:
        for name, raw in layer.items():
            values[name], origin[name] = raw, layer_name
    parsed = {}
    for setting in SETTINGS:
        raw = values.get(setting.name)
        if not renders and setting.name == "stack_domain" and not raw:
            parsed[setting.name] = ""
            continue
        try:
            parsed[setting.name] = setting.parse(raw)
        except ValueError as exc:
            if raw is None:
                raise SettingsError(
                    f"setting {setting.env} is required: set it in the environment, "
                    f"as {setting.flag} or as {setting.name} in a settings file"
                ) from None
            shown = "(hidden)" if setting.secret else quoted(raw)
            raise SettingsError(
                f"setting {setting.env} ({origin.get(setting.name, 'unset')}): {shown} {exc}"
            ) from None
    # Files rhgen adds beyond the seed's sit beside the seed paths the user chose, never in a
    # folder they did not name (the lock and fingerprint sit beside HAPROXY_BACKEND_CONFIG).
    if not parsed["haproxy_ssl_crt_list"]:
        parsed["haproxy_ssl_crt_list"] = os.path.join(os.path.dirname(parsed["haproxy_config"]), "crt-list.txt")
        origin["haproxy_ssl_crt_list"] = f"beside HAPROXY_CONFIG ({origin.get('haproxy_config', 'unset')})"
    settings = Settings(**parsed, origin=origin)
    _check_together(settings)
    return settings


def _check_together(settings: Settings) -> None:
    if settings.enable_ssl_redirection and not settings.enable_ssl:
        raise SettingsError("setting ENABLE_SSL_REDIRECTION needs ENABLE_SSL=true (nothing would answer on HTTPS)")
    if settings.disable_metadata and not settings.metadata_file:
        raise SettingsError("setting METADATA_FILE is required when DISABLE_METADATA is true")
    if settings.enable_stats:
        # The stats page and /metrics are never served without basic auth.
        for env, value in (("STATS_USERNAME", settings.stats_username), ("STATS_PASSWORD", settings.stats_password)):
            if not value:
                raise SettingsError(f"setting {env} is empty: ENABLE_STATS needs a user name and a password")
    if settings.disable_metadata and settings.source in ("docker", "swarm"):
        raise SettingsError(f"settings DISABLE_METADATA=true (the file source) and RHGEN_SOURCE={settings.source} contradict each other")
    if settings.source == "file" and not settings.metadata_file:
        raise SettingsError("setting METADATA_FILE is required when RHGEN_SOURCE is file")
    # Checked only when used: DOCKER_HOST is often set for the docker CLI (ssh://, tls) on hosts that use another source.
    if settings.source in ("docker", "swarm") and not is_docker_host(settings.docker_host):
        raise SettingsError(
            f"setting DOCKER_HOST ({settings.origin.get('docker_host', 'unset')}): {quoted(settings.docker_host)} "
            "is not unix:///path/to/docker.sock or tcp://host:port"
        )
    if settings.acme_directory and not settings.enable_ssl:
        raise SettingsError("setting ACME_DIRECTORY needs ENABLE_SSL=true (issued certificates are served on HTTPS)")
    if settings.acme_directory and not settings.acme_dir:
        raise SettingsError("setting ACME_DIR is required when ACME_DIRECTORY is set")
    ports = {"HTTP_PORT": settings.http_port}
    if settings.enable_ssl:
        ports["HTTPS_PORT"] = settings.https_port
    if settings.enable_stats:
        ports["STATS_PORT"] = settings.stats_port
    seen: dict[int, str] = {}
    for env, port in ports.items():
        if port in seen:
            raise SettingsError(f"settings {seen[port]} and {env} both use port {port}")
        seen[port] = env
    paths = {s.env: getattr(settings, s.name) for s in SETTINGS if s.kind is Kind.OUTPUT}
    seen_paths: dict[str, str] = {}
    for env, path in paths.items():
        resolved = os.path.abspath(path)
        if resolved in seen_paths:
            raise SettingsError(f"settings {seen_paths[resolved]} and {env} name the same file {path}")
        seen_paths[resolved] = env


# Not a secret: the published default of the image rhgen replaces, warned about at every run.
DEFAULT_STATS_PASSWORD = "haproxy"  # nosec B105


def settings_warnings(settings: Settings) -> list[str]:
    """Settings that work but should not stay as they are; logged at every start."""
    found = []
    if settings.enable_stats and settings.stats_password == DEFAULT_STATS_PASSWORD:
        found.append(
            f"INSECURE: STATS_PASSWORD is still the default {DEFAULT_STATS_PASSWORD!r}: anyone who can reach port "
            f"{settings.stats_port} can read the stats page and /metrics; set STATS_PASSWORD"
        )
    return found

