"""The no-change fast path: a fingerprint of what the live files were made from.

The common cron run changes nothing, and its cost is start-up. After each full run, a small
file beside the lock (.rhgen.fingerprint) records a digest of every input (settings, routing
model, templates, certificate inputs) and a digest of every output file as written. A run
whose inputs digest matches, and whose live files still hash to the recorded outputs digest,
is done without importing Jinja2 or cryptography, rendering or running haproxy. Anything
else (no stamp, a file edited by hand, a certificate near expiry) takes the full path.

Before that, a shorter cut for the sources with a fetch_answers (rancher, file, docker; docker's
answers are the routing form of its list, without the Status text that changes every second):
a second small file (.rhgen.answers) records a digest of the answers' raw bytes with everything else (every
setting, templates, certificate files) and the inputs digest the model made of them. When the
same bytes come again and the live files are still those inputs' outputs, the model would come
out the same (it is made of the answers, the settings and the live files only), so the run is
done without decoding the answers at all. It is written only by a run that found its model in
service, never by one that is about to change the files (whose model was made from the old ones).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, files, resources
from .settings import SETTINGS, Kind

log = logging.getLogger(__name__)

STAMP_NAME = ".rhgen.fingerprint"


@dataclass(frozen=True)
class Stamp:
    inputs: str
    outputs: str
    recheck_after: int  # unix time after which certificates must be validated again; 0 = never
    paths: tuple[str, ...]  # the output files, in the order they are hashed
    config: str = ""  # digest of the settings alone: which configuration wrote the folder
    previous: str = ""  # the configuration that wrote it before that one, when they differ


def _update_with_file(digest: Any, path: Path) -> None:
    try:
        digest.update(path.read_bytes())
    except OSError:
        digest.update(b"\0missing\0")


# How rhgen runs, not what it renders: changing these must not force a full run.
OPERATIONAL = frozenset(s.name for s in SETTINGS if s.kind is Kind.OPERATIONAL)


def _rendered_settings(settings: Any) -> dict[str, Any]:
    return {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(settings)
        if field.name not in OPERATIONAL and field.name != "origin"
    }


def settings_digest(settings: Any) -> str:
    return hashlib.sha256(repr(_rendered_settings(settings)).encode()).hexdigest()[:32]


def inputs_digest(settings: Any, routing: Any, service_metadata: Mapping[str, Any]) -> str:
    rendered_settings = _rendered_settings(settings)
    digest = hashlib.sha256(f"{__version__}\n{rendered_settings!r}\n".encode())
    _update_with_model(digest, routing)
    if settings.enable_ssl:
        for key in ("ssl_cert", "ssl_key"):
            digest.update(repr(service_metadata.get(key)).encode())
    _update_with_files(digest, settings, mounted_pem="ssl_cert" not in service_metadata)
    return digest.hexdigest()[:32]


def _update_with_model(digest: Any, routing: Any) -> None:
    """Every field of the routing model, a tuple's items one by one: the repr of the whole model
    at once would be a string of megabytes at 10,000 containers, held twice (text and bytes) and
    leaving the process that much larger. A repr holds no newline, so each field is delimited."""
    for field in dataclasses.fields(routing):
        value = getattr(routing, field.name)
        digest.update(f"{field.name}=".encode())
        for item in value if isinstance(value, tuple) else (value,):
            digest.update(repr(item).encode())
            digest.update(b",")
        digest.update(b"\n")


def _update_with_files(digest: Any, settings: Any, mounted_pem: bool) -> None:
    """The templates and the certificate files the outputs are made from."""
    for folder in (settings.template_dir, str(resources.template_dir())):
        if folder and os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                digest.update(name.encode() + b"\0")
                _update_with_file(digest, Path(folder, name))
    if settings.enable_ssl:
        if mounted_pem:  # a mounted PEM; otherwise rhgen writes that file itself
            _update_with_file(digest, Path(settings.haproxy_ssl_cert))
        if settings.haproxy_ssl_cert_dir and os.path.isdir(settings.haproxy_ssl_cert_dir):
            for name in sorted(os.listdir(settings.haproxy_ssl_cert_dir)):
                digest.update(name.encode() + b"\0")
                _update_with_file(digest, Path(settings.haproxy_ssl_cert_dir, name))


# --- the shorter cut: the answers' raw bytes -----------------------------------------------------

ANSWERS_NAME = ".rhgen.answers"


@dataclass(frozen=True)
class Remembered:
    """What a run that found its model in service made of the answers it read."""

    key: str  # answers_key() of that run
    inputs: str  # the inputs digest of its model
    counts: tuple[int, int, int]  # hosts, backends, servers: the run's summary line
    warnings: tuple[str, ...] = ()  # what its model warned about (said again by every run, as before)


def answers_key(settings: Any, raw: Sequence[bytes]) -> str:
    """A digest of the raw answers and of everything else a model and its files are made of.
    Every setting counts here (operational ones too: the source's address is one), and the PEM
    file always: being wrong costs one full run, never a missed change."""
    every = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "origin"}
    digest = hashlib.sha256(f"{__version__}\n{every!r}\n".encode())
    for part in raw:  # each with its length: no two splits of the same bytes digest alike
        digest.update(b"%d\n" % len(part))
        digest.update(part)
    _update_with_files(digest, settings, mounted_pem=True)
    return digest.hexdigest()[:32]


def answers_path(anchor: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(anchor)), ANSWERS_NAME)


def read_remembered(anchor: str) -> Remembered | None:
    try:
        lines = Path(answers_path(anchor)).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    counts = lines[2].split(" ") if len(lines) > 3 else []
    if len(counts) != 3 or not all(c.isdigit() for c in counts) or lines[-1] != "":
        return None
    hosts, backends, servers = (int(c) for c in counts)
    return Remembered(lines[0], lines[1], (hosts, backends, servers), tuple(lines[3:-1]))


def remember(anchor: str, remembered: Remembered) -> None:
    """Record it (atomically, and only when it differs: a no-change run writes nothing)."""
    if read_remembered(anchor) == remembered:
        return
    warnings = [w.replace("\n", " ") for w in remembered.warnings]  # one line each, as logged
    text = "\n".join([remembered.key, remembered.inputs, " ".join(map(str, remembered.counts)), *warnings]) + "\n"
    try:
        files.write_atomically(answers_path(anchor), text.encode("utf-8"))
    except OSError as exc:  # only the next run's speed depends on it
        log.warning("%s: cannot write (%s); the next run decodes the answers", answers_path(anchor), exc.strerror)


def outputs_digest(contents: Sequence[bytes]) -> str:
    digest = hashlib.sha256()
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()[:32]


def stamp_path(anchor: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(anchor)), STAMP_NAME)


def write_stamp(anchor: str, stamp: Stamp) -> None:
    """Record what the live files were made from (atomically; losing it costs one full run)."""
    path = stamp_path(anchor)
    old = read_stamp(anchor)
    if old and old.config != stamp.config:
        stamp = dataclasses.replace(stamp, previous=old.config)
    elif old:
        stamp = dataclasses.replace(stamp, previous=old.previous)
    config = f"config {stamp.config} {stamp.previous or '-'}"
    text = "\n".join([stamp.inputs, stamp.outputs, str(stamp.recheck_after), config, *stamp.paths]) + "\n"
    if old == stamp:
        return
    try:  # rhgen's temp names: the ones a later run cleans up after a kill
        files.write_atomically(path, text.encode("utf-8"))
    except OSError as exc:  # only the next run's speed depends on it
        log.warning("%s: cannot write (%s); the next run takes the full path", path, exc.strerror)


def read_stamp(anchor: str) -> Stamp | None:
    try:
        fields = Path(stamp_path(anchor)).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) < 4 or not fields[2].isdigit():
        return None
    config = fields[3].split(" ")
    if len(config) == 3 and config[0] == "config":
        return Stamp(fields[0], fields[1], int(fields[2]), tuple(fields[4:]), config[1], "" if config[2] == "-" else config[2])
    return Stamp(fields[0], fields[1], int(fields[2]), tuple(fields[3:]))  # written before configurations were told apart


def warn_about_other_writer(anchor: str, stamp: Stamp) -> None:
    """Two configurations writing one folder (say, two STACK_DOMAINs) replace each other's files
    and reload on every run; a folder written by A, then B, then A again is that, not a one-off change."""
    old = read_stamp(anchor)
    if old and old.config and old.config != stamp.config and old.previous == stamp.config:
        log.warning(
            "%s: two rhgen configurations with different settings write this folder in turn "
            "(the last run used other settings, the one before these): each run replaces the other's files and reloads",
            os.path.dirname(os.path.abspath(anchor)),
        )


def live_files_match(anchor: str, inputs: str, now: float | None = None) -> bool:
    """True when the live files were made from these inputs and nobody changed them since."""
    stamp = read_stamp(anchor)
    if stamp is None or stamp.inputs != inputs:
        return False
    if stamp.recheck_after and (now or time.time()) >= stamp.recheck_after:
        return False
    contents = []
    for path in stamp.paths:
        try:
            contents.append(Path(path).read_bytes())
        except OSError:
            return False
    return outputs_digest(contents) == stamp.outputs
