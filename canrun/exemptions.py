"""Exemptions: which findings a workload is exempt from, and why.

One mechanism, two ways in: the ``canrun.io/skip`` annotation a workload
carries, and (in later settings) a central list in the config file.  Both end
here, so every door (check, webhook, audit) exempts exactly the same findings
and says the same thing about them.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The annotation listing the rule ids a workload is exempt from (``all`` for every rule), on the object or
#: on any of its pod templates (they add up).
SKIP_ANNOTATION = "canrun.io/skip"


def skipped_rules(annotations: Mapping[str, str]) -> frozenset[str]:
    """Rule ids a ``canrun.io/skip`` annotation exempts (``all`` exempts every rule)."""
    raw = annotations.get(SKIP_ANNOTATION, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())
