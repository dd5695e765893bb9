"""canrun's version: the installed package's metadata, plus the git commit when run from a checkout.

The number lives in ``pyproject.toml`` only; ``canrun.__version__`` reads it from
the installed distribution's metadata (an editable install from the checkout
included), so a release bump is one edit.  ``--version`` adds the commit of the
checkout it runs from, because two builds of one version number can differ.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

#: Reported when canrun runs from a source tree that was never installed (``PYTHONPATH=.``).
UNKNOWN = "0+unknown"


def package_version() -> str:
    try:
        return metadata.version("canrun")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def git_commit(start: Path | None = None) -> str | None:
    """The short commit of the checkout holding this package, if it is one (and git is installed)."""
    root = (start or Path(__file__).resolve().parent).parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False)
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def version_string() -> str:
    """``0.1.0`` or, from a git checkout, ``0.1.0 (commit 1a2b3c4d5e6f)``."""
    commit = git_commit()
    return f"{package_version()} (commit {commit})" if commit else package_version()
