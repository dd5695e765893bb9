"""Hostile images in a real registry, through the real doors: ``canrun check`` and the webhook.

For every image of ``cases.py``: the finding a user must see (rule, one-line
message naming the problem), the exit status of the contract (1 when an error
finding is reported, 0 for a warning), no traceback, and bounded memory and
time — measured on the CLI child process (peak RSS from ``wait4``), guarded by
a watchdog that kills a hung run.  The webhook must answer each within its
deadline and finish the background work it started.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from canrun import cli
from canrun.image.limits import MIB, Limits
from tests.robustness import cases
from tests.robustness.conftest import CliResult, deployment, pod_review, run_cli

pytestmark = [pytest.mark.registry, pytest.mark.timeout(240)]

#: Peak RSS of one ``canrun check`` over the whole hostile catalogue (the interpreter alone is ~60 MB).
#: The million-entry layer is indexed up to its limit (~150 MB of entries) before it is refused.
MAX_RSS_MB = 700


def _findings_for(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if (f.get("resource") or {}).get("name") == name]


def _matches(found: list[dict[str, Any]], expect: cases.Expect) -> bool:
    return any(f["rule"] == expect.rule and f["severity"] == expect.severity
               and expect.message.lower() in f["message"].lower() for f in found)


@pytest.fixture(scope="module")
def batch(hostile: dict[str, cases.Pushed], local_registry: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[CliResult, dict[str, Any]]:
    """One ``canrun check`` child over a directory holding one Deployment per hostile image."""
    directory = tmp_path_factory.mktemp("hostile-manifests")
    for name, case in hostile.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(deployment(name, case.ref)))
    result = run_cli(["check", "-f", str(directory), "--format", "json", "--no-cache",
                      "--insecure-registry", local_registry.host, "--timeout", "20"], kill_after=180)
    result.assert_clean()
    return result, json.loads(result.stdout)


@pytest.fixture(scope="module")
def cached_batches(hostile: dict[str, cases.Pushed], local_registry: Any, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[list[CliResult], list[dict[str, Any]]]:
    """The same catalogue with the cache on, twice: the first run writes every record, the second reads them."""
    directory = tmp_path_factory.mktemp("hostile-manifests-cached")
    for name, case in hostile.items():
        if not case.heavy:
            (directory / f"{name}.yaml").write_text(yaml.safe_dump(deployment(name, case.ref)))
    cache = tmp_path_factory.mktemp("hostile-cache")
    results = [run_cli(["check", "-f", str(directory), "--format", "json", "--cache-dir", str(cache),
                        "--insecure-registry", local_registry.host, "--timeout", "20"], kill_after=180)
               for _ in range(2)]
    for result in results:
        result.assert_clean()
    return results, [json.loads(r.stdout) for r in results]


@pytest.mark.parametrize("name", [n for n in cases.NAMES if n not in ("gzip-bomb", "zstd-bomb", "million-entries")])
def test_hostile_image_finding_with_the_cache_on_cold_and_warm(
        name: str, cached_batches: tuple[list[CliResult], list[dict[str, Any]]],
        hostile: dict[str, cases.Pushed]) -> None:
    """The cache encodes what the reader accepted (no struct.error) and a warm run answers as the cold one."""
    _, docs = cached_batches
    cold, warm = (_findings_for(doc, name) for doc in docs)
    assert _matches(cold, hostile[name].expect), json.dumps(cold, indent=1)
    # the same verdicts; a warm run may word one differently (a misstated size is caught by the cached record)
    assert _matches(warm, hostile[name].expect), json.dumps(warm, indent=1)
    assert [(f["rule"], f["severity"]) for f in warm] == [(f["rule"], f["severity"]) for f in cold]


def test_batch_is_bounded_and_fails_on_errors(batch: tuple[CliResult, dict[str, Any]]) -> None:
    result, doc = batch
    assert result.code == 1, result.stderr  # image-corrupt findings are errors
    assert result.max_rss_mb < MAX_RSS_MB, f"peak RSS {result.max_rss_mb:.0f} MB"
    assert not doc["input_errors"]


@pytest.mark.parametrize("name", cases.NAMES)
def test_hostile_image_finding(name: str, batch: tuple[CliResult, dict[str, Any]],
                               hostile: dict[str, cases.Pushed]) -> None:
    _, doc = batch
    found = _findings_for(doc, name)
    expect = hostile[name].expect
    assert _matches(found, expect), json.dumps(found, indent=1)
    for f in found:
        assert "\n" not in f["message"], f["message"]
        assert len(f["message"]) < 400, f["message"]


def _check_one(ref: str, registry: str, tmp: Path, *extra: str) -> tuple[int, str, str]:
    """``canrun check`` in-process through ``cli.main`` (the door minus the process boundary: no start-up cost)."""
    manifest = tmp / "deploy.yaml"
    manifest.write_text(yaml.safe_dump(deployment("one", ref)))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", "-f", str(manifest), "--format", "json", "--no-cache", "--insecure-registry", registry,
                     "--timeout", "20", *extra], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", ["traversal", "gnu-longname-100mb", "symlink-loop", "gzip-type-garbage",
                                  "truncated", "digest-mismatch", "config-array", "config-50mb", "entry-is-index",
                                  "many-layers", "huge-config-size"])
def test_exit_status_per_case(name: str, hostile: dict[str, cases.Pushed], local_registry: Any,
                              tmp_path: Path) -> None:
    """Error findings exit 1; an unreadable image is a warning (exit 0) unless --strict (exit 1)."""
    expect = hostile[name].expect
    code, out, err = _check_one(hostile[name].ref, local_registry.host, tmp_path)
    assert "Traceback" not in err
    assert code == (1 if expect.severity == "error" else 0), err
    assert _matches(json.loads(out)["findings"], expect), out
    if expect.rule == "image-unresolvable":
        code, out, err = _check_one(hostile[name].ref, local_registry.host, tmp_path, "--strict")
        assert code == 1, err


# --------------------------------------------------------------------------- the webhook

WEBHOOK_LIMITS = Limits(max_entries=100_000, max_total_bytes=512 * MIB)
"""The webhook is built with lowered limits (``Settings.limits``; ``canrun serve`` has no flag for them) so the
bombs trip a byte limit in a fraction of a second instead of burning a core in the background."""


def test_webhook_answers_every_hostile_image_within_deadline(hostile: dict[str, cases.Pushed], local_registry: Any,
                                                             webhook_factory: Any) -> None:
    hook = webhook_factory(registries=(local_registry.host,), deadline=3.0, limits=WEBHOOK_LIMITS)
    problems = []
    for name, case in sorted(hostile.items()):
        body = pod_review(case.ref, name=name)
        resp, elapsed = hook.post(body)
        if resp.status_code != 200:
            problems.append(f"{name}: HTTP {resp.status_code} {resp.text[:200]}")
            continue
        answer = resp.json()["response"]
        assert answer["uid"] == body["request"]["uid"]
        if elapsed > hook.deadline + 2:
            problems.append(f"{name}: answered after {elapsed:.1f}s (deadline {hook.deadline}s)")
        said = " ".join(answer.get("warnings") or []) + (answer.get("status") or {}).get("message", "")
        if "canrun" not in said:
            problems.append(f"{name}: no canrun verdict in {answer}")
        if "internal error" in said:
            problems.append(f"{name}: {said}")
    assert not problems, "\n".join(problems)
    hook.drain(timeout=90)  # every background validation ends, bounded


def test_a_misstated_layer_size_is_caught_when_the_layer_is_already_cached(
        hostile: dict[str, cases.Pushed], local_registry: Any, tmp_path: Path) -> None:
    """containerd refuses a layer whose manifest gives the wrong size on any node that does not hold it yet,
    so a layer canrun indexed for another image (here nested-index, the same blob) must not vouch for it."""
    cache = tmp_path / "cache"
    manifests = tmp_path / "m"
    manifests.mkdir()
    for name in ("nested-index", "short-layer-size"):
        (manifests / f"{name}.yaml").write_text(yaml.safe_dump(deployment(name, hostile[name].ref)))

    def check(name: str) -> list[dict[str, Any]]:
        result = run_cli(["check", "-f", str(manifests / f"{name}.yaml"), "--format", "json", "--cache-dir",
                          str(cache), "--insecure-registry", local_registry.host, "--timeout", "20"])
        result.assert_clean()
        return _findings_for(json.loads(result.stdout), name)

    assert not any(f["rule"] == "image-corrupt" for f in check("nested-index"))
    assert any((cache / "layers").rglob("*.idx"))  # the shared layer is now cached
    found = check("short-layer-size")
    assert _matches(found, hostile["short-layer-size"].expect), json.dumps(found, indent=1)
