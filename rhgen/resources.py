"""Where the bundled templates and defaults.yml live: inside the installed package, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _root() -> Path:
    # setup.py copies templates/ and defaults.yml into rhgen/resources/ of a built package;
    # an editable install or a plain checkout reads them from the repository's top level.
    packaged = _PACKAGE / "resources"
    return packaged if (packaged / "defaults.yml").is_file() else _PACKAGE.parent


def defaults_file() -> Path:
    return _root() / "defaults.yml"


def template_dir() -> Path:
    return _root() / "templates"
