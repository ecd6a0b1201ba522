"""Exceptions of every stage. The CLI catches RhgenError once, prints its message on one line, exits non-zero."""


class RhgenError(Exception):
    """A failure the user can act on; the message names the culprit."""

    exit_code = 1


class SettingsError(RhgenError):
    """A setting (default file, override file, environment or flag) is invalid."""

    exit_code = 2


class SourceError(RhgenError):
    """The metadata source could not be read or answered something unusable."""


class CertificateError(RhgenError):
    """A certificate or key is unusable."""


class CheckError(RhgenError):
    """haproxy rejected the staged configuration."""


class ApplyError(RhgenError):
    """Staging, swapping or reloading failed."""


class ReloadError(RhgenError):
    """haproxy's master did not take a new configuration; the previous worker keeps serving."""


class RuntimeApiError(RhgenError):
    """HAProxy's runtime API (stats socket) refused or failed a change; the caller reloads instead."""


class AcmeError(RhgenError):
    """An ACME order (or the ACME server) failed: a warning, the host is retried later, routing is untouched."""


class SwapUndone(ApplyError):
    """A swap failed before its last rename and put back every file it had replaced: the set in service is the old one."""
