"""A bug of canrun's, injected: the checks raise for one image, so the doors' internal-error paths are exercised."""

from __future__ import annotations

from typing import Any

import pytest


def inject_bug(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    """Make ``check_container`` raise ``RuntimeError("injected bug")`` for containers of ``image`` only."""
    from canrun import validator as validator_module

    real = validator_module.check_container

    def check_container(ctx: Any) -> Any:
        if ctx.container.image == image:
            raise RuntimeError("injected bug")
        return real(ctx)

    monkeypatch.setattr(validator_module, "check_container", check_container)
