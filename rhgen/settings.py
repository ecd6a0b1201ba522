"""Settings stage: bundled defaults.yml < override YAML < environment < flags -> one frozen Settings.

Each setting is declared once in SETTINGS (name, env var, parser, help); the CLI builds
its options from the same table, so `--help`, the environment and the YAML files can
never disagree about names.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

try:  # the C build of the safe loader: same documents, a fifth of the start-up cost
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

from . import resources, sources
from .errors import SettingsError
from .messages import shown as quoted
from .names import is_hostname, normalise_hostname

# --- parsers: raw value (str from env/flags, any YAML scalar from files) -> typed value ---

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("is not a boolean (use true/false, yes/no or 1/0)")


class YamlNonDecimal(str):
    """The text of a YAML 1.1 integer that is not plain decimal (0x50, 0o17, 017, 1_000, 1:30).
    YAML would read `http_port: 0x50` as 80: settings are decimal, so integer parsers refuse it,
    while text settings (a password `0x50`) keep exactly what was written."""


def _decimal_text(raw: Any) -> str:
    if isinstance(raw, bool) or isinstance(raw, YamlNonDecimal):
        raise ValueError("is not a decimal whole number")
    return str(raw).strip()


def _parse_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise ValueError("is not a decimal whole number")
        return raw  # from YAML, only plain decimal literals stay ints (see _non_decimal_integers)
    text = _decimal_text(raw)
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ValueError("is not a decimal whole number")
    return int(text)


def parse_port(raw: Any) -> int:
    try:
        port = _parse_int(raw)
    except ValueError:
        raise ValueError("is not a port (1-65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError("is not a port (1-65535)")
    return port


def parse_count(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 100:
        raise ValueError("is too large (at most 100)")
    return value


def parse_bytes(raw: Any) -> int:
    """A size in bytes, with an optional k/M suffix (binary: 64M is 64 MiB)."""
    text = _decimal_text(raw)
    match = re.fullmatch(r"([0-9]{1,12})\s*(?:([kKmM])i?)?[bB]?", text)
    if not match:
        raise ValueError("is not a size in bytes (e.g. 65536, 512k or 64M)")
    value = int(match.group(1)) * {None: 1, "k": 1024, "m": 1024 * 1024}[match.group(2) and match.group(2).lower()]
    if not 1024 <= value <= 4 * 1024**3:
        raise ValueError("must be at least 1k and at most 4096M")
    return value


def parse_percent(raw: Any) -> int:
    """A share in percent, 0-100, with or without a trailing %."""
    text = _decimal_text(raw).removesuffix("%").strip()
    if not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 100:
        raise ValueError("is not a percentage (0-100)")
    return int(text)


def _parse_float(raw: Any) -> float:
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ValueError("is not a number of seconds") from None


def parse_seconds(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 < value <= 3600:
        raise ValueError("must be more than 0 and at most 3600 seconds")
    return value


def parse_redirect_code(raw: Any) -> int:
    try:
        code = _parse_int(raw)
    except ValueError:
        code = 0
    if code not in (301, 302, 303, 307, 308):
        raise ValueError("is not a redirect status (301, 302, 303, 307 or 308)")
    return code


def parse_domain(raw: Any) -> str:
    domain = normalise_hostname(str(raw if raw is not None else ""))
    if not domain:
        raise ValueError("is required (e.g. dev.example.com)")
    if not is_hostname(domain):
        raise ValueError("is not a valid domain name")
    return domain


def parse_text(raw: Any) -> str:
    text = "" if raw is None else str(raw)
    if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        raise ValueError("contains a control character")
    return text.strip()


def _optional_matching(pattern: str, reason: str) -> Callable[[Any], str]:
    """A parser for free text that is empty or matches `pattern` whole; anything else fails with `reason`."""
    compiled = re.compile(pattern)

    def parse(raw: Any) -> str:
        text = parse_text(raw)
        if text and not compiled.fullmatch(text):
            raise ValueError(reason)
        return text

    return parse


def parse_word(raw: Any) -> str:
    """A value written into haproxy.cfg as one word: printable ASCII, no space, quote, # or %."""
    text = parse_text(raw)
    if not re.fullmatch(r"[A-Za-z0-9_.:@/+=,!*^~-]*", text):
        raise ValueError("may only hold letters, digits and _.:@/+=,!*^~- (no spaces, quotes, # or %)")
    return text


parse_label_name = _optional_matching(r"[A-Za-z0-9_./-]+", "is not a label name")


def parse_path(raw: Any) -> str:
    text = parse_text(raw)
    if text and re.search(r"[\s\"'#%\\]", text):
        raise ValueError("must not contain spaces, quotes, '#', '%' or backslashes")
    return text


def parse_required_path(raw: Any) -> str:
    text = parse_path(raw)
    if not text:
        raise ValueError("is required")
    return text


def parse_file_path(raw: Any) -> str:
    """A path rhgen writes into haproxy.cfg: made absolute, so haproxy's working folder does not matter."""
    text = parse_path(raw)
    return os.path.abspath(text) if text else ""


def parse_required_file_path(raw: Any) -> str:
    return os.path.abspath(parse_required_path(raw))


def parse_days(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 3650:
        raise ValueError("is too large (at most 3650 days)")
    return value


def parse_hsts(raw: Any) -> int:
    value = _parse_int(raw)
    if value > 2 * 365 * 86400:
        raise ValueError("is too large (at most two years in seconds)")
    return value


def parse_file_name(raw: Any) -> str:
    text = parse_text(raw)
    if text and (not re.fullmatch(r"[A-Za-z0-9_.@+=,-]+", text) or text.startswith(".")):
        raise ValueError("is not a plain file name")
    return text


def parse_bind_address(raw: Any) -> str:
    text = parse_text(raw)
    if text in ("", "*"):
        return ""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError("is not an IP address (leave empty to bind every address)") from None


def parse_api_version(raw: Any) -> str:
    text = parse_text(raw)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise ValueError("is not a metadata API version (e.g. latest or 2015-12-19)")
    return text


def parse_api_host(raw: Any) -> str:
    text = parse_text(raw)
    if not text or re.search(r"\s", text):
        raise ValueError("is not a host, host:port or http(s):// URL")
    return text


def parse_command(raw: Any) -> str:
    text = parse_text(raw)
    try:
        shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"is not a valid command line ({exc})") from None
    return text


def parse_source(raw: Any) -> str:
    text = parse_text(raw).lower()
    if text not in SOURCES:
        raise ValueError(f"is not a source (use {', '.join(SOURCES)})")
    return text


def parse_swarm_endpoint(raw: Any) -> str:
    text = parse_text(raw).lower()
    if text not in SWARM_ENDPOINTS:
        raise ValueError(f"is not a swarm endpoint mode (use {', '.join(SWARM_ENDPOINTS)})")
    return text


def is_docker_host(text: str) -> bool:
    """unix:///path/docker.sock or tcp://host:port (plain HTTP), as the docker CLI reads DOCKER_HOST."""
    return bool(re.fullmatch(r"unix:///[^\s\"'#%\\]+", text) or re.fullmatch(r"tcp://[A-Za-z0-9_.:\[\]-]+", text))


parse_docker_network = _optional_matching(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "is not a Docker network name")


def parse_settle(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 <= value <= 60:
        raise ValueError("must be between 0 and 60 seconds")
    return value


def parse_max_wait(raw: Any) -> int:
    try:
        value = _parse_int(raw)
    except ValueError:
        raise ValueError("is not a whole number of seconds (1-120)") from None
    if not 1 <= value <= 120:
        raise ValueError("must be between 1 and 120 seconds (the metadata service's limit)")
    return value


def parse_url(raw: Any) -> str:
    """Empty, or an http(s) URL without spaces or quotes (the ACME directory)."""
    text = parse_text(raw)
    if text and not re.fullmatch(r"https?://[^\s\"'<>\\]+", text):
        raise ValueError("is not an http(s):// URL (leave empty to turn ACME off)")
    return text


def parse_host_patterns(raw: Any) -> tuple[str, ...]:
    """Host names or *.suffix patterns, separated by commas or spaces; empty means every routed host."""
    if isinstance(raw, (list, tuple)):
        items = [str(item) for item in raw]
    else:
        items = re.split(r"[\s,]+", parse_text(raw))
    patterns = []
    for item in filter(None, (normalise_hostname(i) for i in items)):
        if not is_hostname(item.removeprefix("*.")):
            raise ValueError(f"holds {item!r}, which is neither a host name nor *.suffix")
        patterns.append(item)
    return tuple(patterns)


def parse_milliseconds(raw: Any) -> int:
    try:
        value = _parse_int(raw)
    except ValueError:
        raise ValueError("is not a whole number of milliseconds (100-60000)") from None
    if not 100 <= value <= 60000:
        raise ValueError("must be between 100 and 60000 milliseconds")
    return value


def parse_check_count(raw: Any) -> int:
    value = parse_count(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def parse_drain_timeout(raw: Any) -> float:
    value = _parse_float(raw)
    if not 0 <= value <= 300:
        raise ValueError("must be between 0 and 300 seconds")
    return value


parse_syslog_host = _optional_matching(r"[A-Za-z0-9_.:\[\]-]+", "is not a host or host:port")


SOURCES = sources.NAMES  # the registry's names
SWARM_ENDPOINTS = ("tasks", "vip")

_FACILITIES = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "auth2", "ftp", "ntp", "audit", "alert", "cron2",
    *(f"local{i}" for i in range(8)),
}


def parse_facility(raw: Any) -> str:
    text = parse_text(raw).lower()
    if text not in _FACILITIES:
        raise ValueError("is not a syslog facility (e.g. local0)")
    return text


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    env: str
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False  # never printed
    security: bool = False  # marked in --help as security-relevant


SETTINGS: tuple[Setting, ...] = (
    Setting("stack_domain", "STACK_DOMAIN", parse_domain, "Domain appended to stack names: app-r123 -> app-r123.<domain>."),
    Setting("http_port", "HTTP_PORT", parse_port, "Port of the HTTP frontend."),
    Setting("https_port", "HTTPS_PORT", parse_port, "Port of the HTTPS frontend."),
    Setting("bind_address", "BIND_ADDRESS", parse_bind_address, "Address the frontends bind to; empty binds every address."),
    Setting("enable_ssl", "ENABLE_SSL", parse_bool, "Terminate TLS on HTTPS_PORT."),
    Setting("enable_ssl_redirection", "ENABLE_SSL_REDIRECTION", parse_bool, "Redirect every HTTP request to HTTPS."),
    Setting("ssl_redirection_type", "SSL_REDIRECTION_TYPE", parse_redirect_code, "Status code of the HTTPS redirect."),
    Setting("ssl_base64_encoded", "SSL_BASE64_ENCODED", parse_bool, "ssl_cert/ssl_key in metadata are base64 of the PEM."),
    Setting("enable_stats", "ENABLE_STATS", parse_bool, "Serve the HAProxy stats page on STATS_PORT.", security=True),
    Setting("stats_port", "STATS_PORT", parse_port, "Port of the stats listener."),
    Setting("stats_username", "STATS_USERNAME", parse_word, "User name of the stats page.", security=True),
    Setting("stats_password", "STATS_PASSWORD", parse_word, "Password of the stats page.", secret=True, security=True),
    Setting("haproxy_config", "HAPROXY_CONFIG", parse_required_file_path, "Main haproxy.cfg written by rhgen; one without rhgen's header is yours, never overwritten."),
    Setting("haproxy_backend_config", "HAPROXY_BACKEND_CONFIG", parse_required_file_path, "Generated backends file."),
    Setting("haproxy_domain_map", "HAPROXY_DOMAIN_MAP", parse_required_file_path, "Generated host -> backend map."),
    Setting("haproxy_ssl_cert", "HAPROXY_SSL_CERT", parse_required_file_path, "Combined certificate + key PEM.", security=True),
    Setting("haproxy_ssl_cert_dir", "HAPROXY_SSL_CERT_DIR", parse_file_path, "Folder of PEM files (cert + key each), served by SNI.", security=True),
    Setting("haproxy_ssl_default_cert", "HAPROXY_SSL_DEFAULT_CERT", parse_file_name, "File in HAPROXY_SSL_CERT_DIR served when no name matches; default the first."),
    Setting("haproxy_ssl_crt_list", "HAPROXY_SSL_CRT_LIST", parse_file_path, "Generated crt-list naming every certificate haproxy loads; empty is crt-list.txt beside HAPROXY_CONFIG."),
    Setting("ssl_expiry_warning_days", "SSL_EXPIRY_WARNING_DAYS", parse_days, "Warn when a certificate expires within this many days."),
    Setting("hsts_max_age", "HSTS_MAX_AGE", parse_hsts, "Strict-Transport-Security max-age in seconds on HTTPS; 0 is off.", security=True),
    Setting("haproxy_bin", "HAPROXY_BIN", parse_required_path, "haproxy binary used for `haproxy -c`."),
    Setting("template_dir", "RHGEN_TEMPLATE_DIR", parse_file_path, "Folder of your own templates; bundled ones fill the gaps."),
    Setting("reload_command", "RELOAD_COMMAND", parse_command, "Command run (without a shell) after files were swapped.", security=True),
    Setting("rancher_api_host", "RANCHER_API_HOST", parse_api_host, "Metadata service: host, host:port or http(s)://host:port."),
    Setting("rancher_api_version", "RANCHER_API_VERSION", parse_api_version, "Metadata API version."),
    Setting("rancher_label", "RANCHER_LABEL", parse_label_name, "Routing label; its value is the container port."),
    Setting("rancher_proxy_label", "RANCHER_PROXY_LABEL", parse_label_name, "Label whose value (send-proxy, send-proxy-v2, ...) ends the server line."),
    Setting("metadata_connect_timeout", "RHGEN_CONNECT_TIMEOUT", parse_seconds, "Seconds to connect to the metadata service."),
    Setting("metadata_read_timeout", "RHGEN_READ_TIMEOUT", parse_seconds, "Seconds for a whole metadata answer."),
    Setting("metadata_retries", "RHGEN_RETRIES", parse_count, "Extra tries when the metadata service refuses, times out or answers 5xx."),
    Setting("metadata_max_bytes", "RHGEN_MAX_ANSWER_BYTES", parse_bytes, "Largest metadata answer read (e.g. 64M); a bigger one is an error.", security=True),
    Setting("drop_warning", "RHGEN_DROP_WARNING", parse_percent, "Warn when a run drops more than this share of routed hosts (percent; 100 never warns)."),
    Setting("disable_metadata", "DISABLE_METADATA", parse_bool, "Read METADATA_FILE instead of the metadata service."),
    Setting("metadata_file", "METADATA_FILE", parse_file_path, "Answers file (JSON or YAML: containers, self_service_metadata)."),
    Setting("source", "RHGEN_SOURCE", parse_source, "Where containers come from: rancher, docker, swarm or file (DISABLE_METADATA=true means file)."),
    Setting("docker_host", "DOCKER_HOST", parse_text, "Docker Engine API: unix:///path/docker.sock or tcp://host:port."),
    Setting("docker_network", "RHGEN_DOCKER_NETWORK", parse_docker_network, "Docker network whose container IPs are routed to; empty takes each container's first network by name that gives it an IP."),
    Setting("swarm_endpoint", "RHGEN_SWARM_ENDPOINT", parse_swarm_endpoint, "swarm: route to each running task (tasks) or to the service's virtual IP (vip)."),
    Setting("swarm_poll", "RHGEN_SWARM_POLL", parse_seconds, "swarm watch: seconds between polls of the tasks (events do not report them)."),
    Setting("watch_settle", "RHGEN_SETTLE", parse_settle, "watch: seconds without further change before regenerating (bursts give one run)."),
    Setting("watch_resync", "RHGEN_RESYNC", parse_seconds, "watch: regenerate at least this often, changed or not (safety net)."),
    Setting("watch_max_wait", "RHGEN_WATCH_MAX_WAIT", parse_max_wait, "watch: seconds one Rancher long poll of /version waits (1-120)."),
    Setting("haproxy_stats_socket", "HAPROXY_STATS_SOCKET", parse_file_path, "Admin stats socket for reload-free host map and server updates; empty is off.", security=True),
    Setting("acme_directory", "ACME_DIRECTORY", parse_url, "ACME directory URL (e.g. Let's Encrypt's); empty turns ACME off."),
    Setting("acme_email", "ACME_EMAIL", parse_text, "Contact e-mail of the ACME account; empty registers without one."),
    Setting("acme_ca_bundle", "ACME_CA_BUNDLE", parse_file_path, "CA file trusted for the ACME directory's TLS (private or test servers); empty uses the system's.", security=True),
    Setting("acme_dir", "ACME_DIR", parse_file_path, "Folder of the ACME account key, issued certificates, challenge map and state.", security=True),
    Setting("acme_renew_days", "ACME_RENEW_DAYS", parse_days, "Renew an ACME certificate when it has fewer days left than this."),
    Setting("acme_hosts", "ACME_HOSTS", parse_host_patterns, "Routed hosts that get ACME certificates: names or *.suffix; empty is every host no certificate of yours covers."),
    Setting("acme_max_orders", "ACME_MAX_ORDERS", parse_count, "ACME orders one run places at most (the rest wait for the next run)."),
    Setting("acme_timeout", "ACME_TIMEOUT", parse_seconds, "Seconds one run spends on ACME orders at most; routing never waits for them."),
    Setting("health_checks", "RHGEN_HEALTH_CHECKS", parse_bool, "Health-check every server (`check`); a server that fails stops getting requests."),
    Setting("check_interval", "RHGEN_CHECK_INTERVAL", parse_milliseconds, "Milliseconds between two health checks of a server (haproxy `inter`, 100-60000)."),
    Setting("check_fall", "RHGEN_CHECK_FALL", parse_check_count, "Failed checks in a row that take a server out (haproxy `fall`)."),
    Setting("check_rise", "RHGEN_CHECK_RISE", parse_check_count, "Passed checks in a row that bring a server back (haproxy `rise`)."),
    Setting("server_retries", "RHGEN_SERVER_RETRIES", parse_count, "Tries on another server when a connection to one fails (haproxy `retries`; 0 is off)."),
    Setting("drain_timeout", "RHGEN_DRAIN_TIMEOUT", parse_drain_timeout, "Seconds a removed server drains its requests before its sessions are shut (0-300)."),
    Setting("syslog_host", "SYSLOG_HOST", parse_syslog_host, "Send haproxy logs to this syslog host[:port]."),
    Setting("syslog_facility", "SYSLOG_FACILITY", parse_facility, "Syslog facility of haproxy logs."),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
PATH_SETTINGS = {
    "haproxy_config", "haproxy_backend_config", "haproxy_domain_map", "haproxy_ssl_cert",
    "haproxy_ssl_cert_dir", "haproxy_ssl_crt_list",
    "template_dir", "metadata_file", "haproxy_stats_socket", "acme_ca_bundle", "acme_dir",
}

Settings = dataclasses.make_dataclass(
    "Settings",
    [(s.name, Any) for s in SETTINGS] + [("origin", dict, dataclasses.field(default_factory=dict, compare=False, repr=False))],
    frozen=True,
    namespace={"__doc__": "Every setting after merging and validation; `origin` says where each value came from."},
)


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
) -> Any:
    """Merge the four layers and validate every value; raise SettingsError naming the first bad one."""
    environ = os.environ if environ is None else environ
    flags = flags or {}
    layers: list[tuple[str, Mapping[str, Any]]] = [("defaults.yml", bundled_defaults())]
    if override_file is None:
        override_file = environ.get("RHGEN_CONFIG") or None
    if override_file:
        layers.append((f"settings file {override_file}", read_yaml_file(Path(override_file))))
    layers.append(("environment", {s.name: environ[s.env] for s in SETTINGS if s.env in environ}))
    layers.append(("command line", {k: v for k, v in flags.items() if v is not None}))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer_name, layer in layers:
        for name, raw in layer.items():
            values[name], origin[name] = raw, layer_name
    parsed = {}
    for setting in SETTINGS:
        raw = values.get(setting.name)
        try:
            parsed[setting.name] = setting.parse(raw)
        except ValueError as exc:
            if raw is None:
                raise SettingsError(
                    f"setting {setting.env} is required: set it in the environment, "
                    f"as {flag_name(setting.name)} or as {setting.name} in a settings file"
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


def _check_together(settings: Any) -> None:
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
    paths = {
        "HAPROXY_CONFIG": settings.haproxy_config,
        "HAPROXY_BACKEND_CONFIG": settings.haproxy_backend_config,
        "HAPROXY_DOMAIN_MAP": settings.haproxy_domain_map,
        "HAPROXY_SSL_CERT": settings.haproxy_ssl_cert,
        "HAPROXY_SSL_CRT_LIST": settings.haproxy_ssl_crt_list,
    }
    seen_paths: dict[str, str] = {}
    for env, path in paths.items():
        resolved = os.path.abspath(path)
        if resolved in seen_paths:
            raise SettingsError(f"settings {seen_paths[resolved]} and {env} name the same file {path}")
        seen_paths[resolved] = env


# Not a secret: the published default of the image rhgen replaces, warned about at every run.
DEFAULT_STATS_PASSWORD = "haproxy"  # nosec B105


def settings_warnings(settings: Any) -> list[str]:
    """Settings that work but should not stay as they are; logged at every start."""
    found = []
    if settings.enable_stats and settings.stats_password == DEFAULT_STATS_PASSWORD:
        found.append(
            f"INSECURE: STATS_PASSWORD is still the default {DEFAULT_STATS_PASSWORD!r}: anyone who can reach port "
            f"{settings.stats_port} can read the stats page and /metrics; set STATS_PASSWORD"
        )
    return found


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def bundled_defaults() -> dict[str, Any]:
    return read_yaml_file(resources.defaults_file())


def describe(setting: Setting) -> str:
    """Help text of one setting: meaning, env var and bundled default."""
    default = bundled_defaults().get(setting.name)
    shown = "none" if default in (None, "") else str(default).lower() if isinstance(default, bool) else default
    security = " Security-relevant." if setting.security else ""
    return f"{setting.help}{security} [env {setting.env}; default {shown}]"
