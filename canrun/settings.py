"""The one way a door gets its settings: flags, then the config file, then the environment.

Apart from ``config`` (which declares the settings and composes them) because
reading a config file needs ``config_file`` and pydantic, which sit above it;
pydantic is imported only when there is a file to read, so a plain
``canrun check`` never pays for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from canrun.config import DISCOVERING_DOORS, FileConfig, Settings, compose, find_config


def load_file(door: str, path: Path | None, cwd: Path | None = None) -> FileConfig:
    """The config file named by ``--config``, else (for check and inspect) the nearest ``.canrun.yaml``."""
    if path is None and door in DISCOVERING_DOORS:
        path = find_config(cwd or Path.cwd())
    if path is None:
        return FileConfig()
    # pydantic is imported only when there is a file to validate: it is a fifth of a warm check's start-up
    from canrun.config_file import load_config

    return load_config(path)


def settings_for(door: str, args: argparse.Namespace, *, cwd: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> Settings:
    """The one way a door gets its settings: flags, then the config file, then the environment."""
    flags = vars(args)
    return compose(door, flags, load_file(door, flags.get("config_file"), cwd), environ)
