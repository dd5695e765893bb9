"""Report formats for ``canrun check``: each module turns a ``CheckRun`` into text for one reader."""

from __future__ import annotations

from dataclasses import dataclass, field

from canrun.errors import ManifestError
from canrun.platform import Platform
from canrun.validator import Report


@dataclass
class CheckRun:
    """One ``canrun check``: the engine's report plus what the input side has to say."""

    report: Report
    platforms: list[Platform]
    platforms_defaulted: bool = False
    input_errors: list[ManifestError] = field(default_factory=list)
    #: Objects read that carry no pod spec (Services, ConfigMaps, CRDs …), by kind.
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    files: int = 0

    def summary(self) -> dict[str, object]:
        r = self.report
        return {
            "errors": len(r.errors),
            "warnings": len(r.warnings),
            "infos": len(r.findings) - len(r.errors) - len(r.warnings),
            "suppressed": len(r.suppressed),
            "workloads": r.workloads,
            "containers": r.containers,
            "images": len(r.images),
            "platforms": [str(p) for p in self.platforms],
            "platforms_defaulted": self.platforms_defaulted,
            "input_errors": len(self.input_errors),
            "files": self.files,
            "skipped_objects": dict(sorted(self.skipped_kinds.items())),
        }

    def summary_line(self) -> str:
        s = self.summary()
        parts = [_count(s["errors"], "error"), _count(s["warnings"], "warning")]
        line = (f"{', '.join(parts)} in {_count(s['workloads'], 'workload')}, "
                f"{_count(s['images'], 'image')} checked")
        if s["input_errors"]:
            line += f", {_count(s['input_errors'], 'unreadable document')}"
        plats = ", ".join(s["platforms"])  # type: ignore[arg-type]
        line += f" (platforms: {plats}{' — the default; pass --platform' if self.platforms_defaulted else ''})"
        return line


def _count(n: object, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
