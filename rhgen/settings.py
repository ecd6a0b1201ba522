"""Settings stage: defaults < override YAML < environment < flags -> one frozen, typed Settings.

Each setting is declared once, as a field of `Settings` below: its type, env var, validator,
default, help and kind. The CLI's options, `--help`, defaults.yml and the README's settings
reference are all derived from those fields (merging the layers is merge.py's) (rhgen/reference.py writes the two files; a test
fails when they drift), so the names can never disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any

from . import sources
from .labels import parse_route_host
from .quantities import (  # one validator per setting, named in the table below
    parse_bool,
    parse_bytes,
    parse_check_count,
    parse_count,
    parse_days,
    parse_drain_timeout,
    parse_hsts,
    parse_interval,
    parse_max_wait,
    parse_milliseconds,
    parse_percent,
    parse_port,
    parse_redirect_code,
    parse_seconds,
    parse_settle,
)
from .validators import (
    parse_api_host,
    parse_api_version,
    parse_bind_address,
    parse_command,
    parse_docker_network,
    parse_domain,
    parse_facility,
    parse_file_name,
    parse_file_path,
    parse_file_watch,
    parse_host_patterns,
    parse_label_name,
    parse_required_file_path,
    parse_required_path,
    parse_syslog_host,
    parse_text,
    parse_url,
    parse_word,
)


class Kind(enum.Enum):
    """What a setting is, for the code that treats settings by kind rather than by name."""

    VALUE = enum.auto()  # part of what a run is made from (the fingerprint of the live files)
    PATH = enum.auto()  # a file or folder: relative in a settings file means relative to that file
    OUTPUT = enum.auto()  # a path rhgen writes: no two outputs may name the same file
    SECRET = enum.auto()  # never shown, not even in an error message
    OPERATIONAL = enum.auto()  # how rhgen runs, not what it renders: changing it forces no full run


PATH_KINDS = (Kind.PATH, Kind.OUTPUT)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting, as the CLI, the loader and the generated references see it."""

    name: str
    type: Any
    env: str
    parse: Callable[[Any], Any]
    default: Any  # as a user writes it (64M, not 67108864); None means required
    help: str
    kind: Kind = Kind.VALUE
    security: bool = False  # marked Security-relevant in --help and the README

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET

    @property
    def shown_default(self) -> str:
        """The default as --help and the README show it; empty when there is none."""
        if self.default is None:
            return ""
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)


def _setting(env: str, parse: Callable[[Any], Any], default: Any, help: str, kind: Kind = Kind.VALUE, security: bool = False) -> Any:
    return dataclasses.field(metadata={"setting": (env, parse, default, help, kind, security)})


SOURCES = sources.NAMES  # the registry's names
SWARM_ENDPOINTS = ("tasks", "vip")


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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting after merging and validation; `origin` says where each value came from."""

    stack_domain: str = _setting("STACK_DOMAIN", parse_domain, None, "Domain appended to stack names: app-r123 -> app-r123.<domain>.")
    http_port: int = _setting("HTTP_PORT", parse_port, 80, "Port of the HTTP frontend.")
    https_port: int = _setting("HTTPS_PORT", parse_port, 443, "Port of the HTTPS frontend.")
    bind_address: str = _setting("BIND_ADDRESS", parse_bind_address, "", "Address the frontends bind to; empty binds every address.")
    enable_ssl: bool = _setting("ENABLE_SSL", parse_bool, False, "Terminate TLS on HTTPS_PORT.")
    enable_ssl_redirection: bool = _setting("ENABLE_SSL_REDIRECTION", parse_bool, False, "Redirect every HTTP request to HTTPS.")
    ssl_redirection_type: int = _setting("SSL_REDIRECTION_TYPE", parse_redirect_code, 301, "Status code of the HTTPS redirect.")
    ssl_base64_encoded: bool = _setting("SSL_BASE64_ENCODED", parse_bool, False, "ssl_cert/ssl_key in metadata are base64 of the PEM.")
    enable_stats: bool = _setting("ENABLE_STATS", parse_bool, False, "Serve the HAProxy stats page on STATS_PORT.", security=True)
    stats_port: int = _setting("STATS_PORT", parse_port, 1936, "Port of the stats listener.")
    stats_username: str = _setting("STATS_USERNAME", parse_word, "haproxy", "User name of the stats page.", security=True)
    stats_password: str = _setting("STATS_PASSWORD", parse_word, "haproxy", "Password of the stats page.", Kind.SECRET, security=True)
    haproxy_config: str = _setting("HAPROXY_CONFIG", parse_required_file_path, "/usr/local/etc/haproxy/haproxy.cfg", "Main haproxy.cfg written by rhgen; one without rhgen's header is yours, never overwritten.", Kind.OUTPUT)
    haproxy_backend_config: str = _setting("HAPROXY_BACKEND_CONFIG", parse_required_file_path, "/usr/local/etc/haproxy/backends.cfg", "Generated backends file.", Kind.OUTPUT)
    haproxy_domain_map: str = _setting("HAPROXY_DOMAIN_MAP", parse_required_file_path, "/usr/local/etc/haproxy/domain.map", "Generated host -> backend map.", Kind.OUTPUT)
    haproxy_ssl_cert: str = _setting("HAPROXY_SSL_CERT", parse_required_file_path, "/usr/local/etc/haproxy/haproxy.pem", "Combined certificate + key PEM.", Kind.OUTPUT, security=True)
    haproxy_ssl_cert_dir: str = _setting("HAPROXY_SSL_CERT_DIR", parse_file_path, "", "Folder of PEM files (cert + key each), served by SNI.", Kind.PATH, security=True)
    haproxy_ssl_default_cert: str = _setting("HAPROXY_SSL_DEFAULT_CERT", parse_file_name, "", "File in HAPROXY_SSL_CERT_DIR served when no name matches; default the first.")
    haproxy_ssl_crt_list: str = _setting("HAPROXY_SSL_CRT_LIST", parse_file_path, "", "Generated crt-list naming every certificate haproxy loads; empty is crt-list.txt beside HAPROXY_CONFIG.", Kind.OUTPUT)
    ssl_expiry_warning_days: int = _setting("SSL_EXPIRY_WARNING_DAYS", parse_days, 14, "Warn when a certificate expires within this many days.")
    hsts_max_age: int = _setting("HSTS_MAX_AGE", parse_hsts, 0, "Strict-Transport-Security max-age in seconds on HTTPS; 0 is off.", security=True)
    haproxy_bin: str = _setting("HAPROXY_BIN", parse_required_path, "haproxy", "haproxy binary used for `haproxy -c`.", Kind.OPERATIONAL)
    template_dir: str = _setting("RHGEN_TEMPLATE_DIR", parse_file_path, "", "Folder of your own templates; bundled ones fill the gaps.", Kind.PATH)
    reload_command: str = _setting("RELOAD_COMMAND", parse_command, "", "Command run (without a shell) after files were swapped.", Kind.OPERATIONAL, security=True)
    rancher_api_host: str = _setting("RANCHER_API_HOST", parse_api_host, "rancher-metadata", "Metadata service: host, host:port or http(s)://host:port.")
    rancher_api_version: str = _setting("RANCHER_API_VERSION", parse_api_version, "latest", "Metadata API version.")
    rancher_label: str = _setting("RANCHER_LABEL", parse_label_name, "map-public-http", "Routing label; its value is the container port.")
    route_host: str = _setting("RHGEN_ROUTE_HOST", parse_route_host, "{route}-{stack}", "Host of a named route (label map-public-http.<route>) under STACK_DOMAIN: {route} and {stack}.")
    rancher_proxy_label: str = _setting("RANCHER_PROXY_LABEL", parse_label_name, "", "Label whose value (send-proxy, send-proxy-v2, ...) ends the server line.")
    metadata_connect_timeout: float = _setting("RHGEN_CONNECT_TIMEOUT", parse_seconds, 3, "Seconds to connect to the metadata service.", Kind.OPERATIONAL)
    metadata_read_timeout: float = _setting("RHGEN_READ_TIMEOUT", parse_seconds, 10, "Seconds for a whole metadata answer.", Kind.OPERATIONAL)
    metadata_retries: int = _setting("RHGEN_RETRIES", parse_count, 2, "Extra tries when the metadata service refuses, times out or answers 5xx.", Kind.OPERATIONAL)
    metadata_max_bytes: int = _setting("RHGEN_MAX_ANSWER_BYTES", parse_bytes, "64M", "Largest metadata answer read (e.g. 64M); a bigger one is an error.", Kind.OPERATIONAL, security=True)
    drop_warning: int = _setting("RHGEN_DROP_WARNING", parse_percent, 50, "Warn when a run drops more than this share of routed hosts (percent; 100 never warns).", Kind.OPERATIONAL)
    disable_metadata: bool = _setting("DISABLE_METADATA", parse_bool, False, "Read METADATA_FILE instead of the metadata service.")
    metadata_file: str = _setting("METADATA_FILE", parse_file_path, "", "Answers file (JSON or YAML: containers, self_service_metadata).", Kind.PATH)
    source: str = _setting("RHGEN_SOURCE", parse_source, "rancher", "Where containers come from: rancher, docker, swarm or file (`DISABLE_METADATA=true` means file).")
    docker_host: str = _setting("DOCKER_HOST", parse_text, "unix:///var/run/docker.sock", "Docker Engine API: `unix:///path/docker.sock` or `tcp://host:port`.")
    docker_network: str = _setting("RHGEN_DOCKER_NETWORK", parse_docker_network, "", "Docker network whose container IPs are routed to; empty takes each container's first network by name that gives it an IP.")
    swarm_endpoint: str = _setting("RHGEN_SWARM_ENDPOINT", parse_swarm_endpoint, "tasks", "swarm: route to each running task (`tasks`) or to the service's virtual IP (`vip`).")
    swarm_poll: float = _setting("RHGEN_SWARM_POLL", parse_seconds, 1, "swarm watch: seconds between polls of the tasks (events do not report them).")
    watch_settle: float = _setting("RHGEN_SETTLE", parse_settle, 0.2, "watch: after a first change that runs at once, seconds without further change before the next run, so the rest of a burst gives one run (0-60).")
    watch_resync: float = _setting("RHGEN_RESYNC", parse_seconds, 60, "watch: regenerate at least this often, changed or not (safety net).")
    watch_max_wait: int = _setting("RHGEN_WATCH_MAX_WAIT", parse_max_wait, 60, "watch: seconds one Rancher long poll of `/version` waits (1-120).")
    haproxy_stats_socket: str = _setting("HAPROXY_STATS_SOCKET", parse_file_path, "", "Admin stats socket for reload-free host map and server updates; empty is off.", Kind.PATH, security=True)
    acme_directory: str = _setting("ACME_DIRECTORY", parse_url, "", "ACME directory URL (e.g. Let's Encrypt's); empty turns ACME off.")
    acme_email: str = _setting("ACME_EMAIL", parse_text, "", "Contact e-mail of the ACME account; empty registers without one.")
    acme_ca_bundle: str = _setting("ACME_CA_BUNDLE", parse_file_path, "", "CA file trusted for the ACME directory's TLS (private or test servers); empty uses the system's.", Kind.PATH, security=True)
    acme_dir: str = _setting("ACME_DIR", parse_file_path, "/usr/local/etc/haproxy/acme", "Folder of the ACME account key, issued certificates, challenge map and state.", Kind.PATH, security=True)
    acme_renew_days: int = _setting("ACME_RENEW_DAYS", parse_days, 30, "Renew an ACME certificate when it has fewer days left than this.")
    acme_hosts: tuple[str, ...] = _setting("ACME_HOSTS", parse_host_patterns, "", "Routed hosts that get ACME certificates: names or *.suffix; empty is every host no certificate of yours covers.")
    acme_max_orders: int = _setting("ACME_MAX_ORDERS", parse_count, 5, "ACME orders one run places at most (the rest wait for the next run).")
    acme_timeout: float = _setting("ACME_TIMEOUT", parse_seconds, 60, "Seconds one run spends on ACME orders at most; routing never waits for them.")
    health_checks: bool = _setting("RHGEN_HEALTH_CHECKS", parse_bool, True, "Health-check every server (`check`); a server that fails stops getting requests.")
    check_interval: int = _setting("RHGEN_CHECK_INTERVAL", parse_milliseconds, 1000, "Milliseconds between two health checks of a server (haproxy `inter`, 100-60000).")
    check_fall: int = _setting("RHGEN_CHECK_FALL", parse_check_count, 2, "Failed checks in a row that take a server out (haproxy `fall`).")
    check_rise: int = _setting("RHGEN_CHECK_RISE", parse_check_count, 2, "Passed checks in a row that bring a server back (haproxy `rise`).")
    server_retries: int = _setting("RHGEN_SERVER_RETRIES", parse_count, 3, "Tries on another server when a connection to one fails (haproxy `retries`; 0 is off).")
    server_connect_timeout: int = _setting("RHGEN_SERVER_CONNECT_TIMEOUT", parse_milliseconds, 2000, "Milliseconds a connection to a server may take before it is tried on another (haproxy `timeout connect`, 100-60000).")
    drain_timeout: float = _setting("RHGEN_DRAIN_TIMEOUT", parse_drain_timeout, 10, "Seconds a removed server drains its requests before its sessions are shut (0-300).")
    haproxy_master_socket: str = _setting("HAPROXY_MASTER_SOCKET", parse_required_file_path, "/run/haproxy/master.sock", "haproxy's master CLI socket: the entrypoint starts haproxy with it, `rhgen reload` talks to it.", Kind.OPERATIONAL, security=True)
    reload_timeout: float = _setting("RHGEN_RELOAD_TIMEOUT", parse_seconds, 30, "Seconds `rhgen reload` waits for the haproxy master to report the reload.", Kind.OPERATIONAL)
    schedule_interval: int = _setting("RHGEN_INTERVAL", parse_interval, 10, "Seconds between runs of `rhgen schedule`, the entrypoint's plain loop where supercronic is missing.", Kind.OPERATIONAL)
    retry_max: float = _setting("RHGEN_RETRY_MAX", parse_seconds, 30, "Longest wait between tries of the first configuration (`rhgen prepare`, `rhgen check --wait`).", Kind.OPERATIONAL)
    file_watch: str = _setting("RHGEN_WATCH", parse_file_watch, "auto", "`rhgen watch-files` (haproxy-only mode): auto, inotify or poll.", Kind.OPERATIONAL)
    poll_interval: float = _setting("RHGEN_POLL_INTERVAL", parse_seconds, 1, "`rhgen watch-files`: seconds between polls of the generated files.", Kind.OPERATIONAL)
    syslog_host: str = _setting("SYSLOG_HOST", parse_syslog_host, "", "Send haproxy logs to this syslog host[:port].")
    syslog_facility: str = _setting("SYSLOG_FACILITY", parse_facility, "local0", "Syslog facility of haproxy logs.")
    origin: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)


def _table() -> tuple[Setting, ...]:
    types = typing.get_type_hints(Settings)
    return tuple(
        Setting(field.name, types[field.name], *field.metadata["setting"])
        for field in dataclasses.fields(Settings)
        if "setting" in field.metadata
    )


SETTINGS: tuple[Setting, ...] = _table()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
PATH_SETTINGS = frozenset(s.name for s in SETTINGS if s.kind in PATH_KINDS)
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}
