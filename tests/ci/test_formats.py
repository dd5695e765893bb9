"""Each report format, rendered from a constructed CheckRun and read back the way its consumer reads it."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from canrun.findings import RULES, Severity, finding
from canrun.output import CheckRun, github, junit, markdown, sarif, text
from canrun.output import json as fmt_json
from canrun.spec import SourceLocation
from tests.ci.conftest import NASTY, WEB

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


# -- SARIF -------------------------------------------------------------------------------------------------


def test_sarif_validates_against_the_oasis_schema(run: CheckRun) -> None:
    doc = json.loads(sarif.render(run, root="/repo", cwd="/repo"))
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc), key=str)
    assert not errors, errors[0]


def test_the_schema_catches_a_broken_log(run: CheckRun) -> None:
    """The vendored schema is really checking: a result with a bad level does not pass."""
    doc = json.loads(sarif.render(run))
    doc["runs"][0]["results"][0]["level"] = "fatal"
    assert list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))


def test_sarif_has_one_rule_per_catalog_rule_with_docs(run: CheckRun) -> None:
    driver = json.loads(sarif.render(run))["runs"][0]["tool"]["driver"]
    assert driver["name"] == "canrun" and driver["version"] and "informationUri" not in driver
    ids = [r["id"] for r in driver["rules"]]
    assert ids == list(RULES)
    cnf = driver["rules"][ids.index("command-not-found")]
    assert cnf["name"] == "CommandNotFound"
    assert cnf["shortDescription"]["text"] == RULES["command-not-found"].title
    assert "exit 127" in cnf["fullDescription"]["text"]
    assert "helpUri" not in cnf  # no docs hosted anywhere unless CANRUN_DOCS_URL says where
    assert RULES["command-not-found"].hint in cnf["help"]["text"]
    assert "canrun explain command-not-found" in cnf["help"]["text"]
    # the whole rule page travels in the log, as shipped in the package
    assert cnf["help"]["markdown"] == RULES["command-not-found"].page
    assert cnf["help"]["markdown"].startswith("# `command-not-found`") and "## How to fix" in cnf["help"]["markdown"]


RENDERERS = {"sarif": sarif.render, "github": github.render, "junit": junit.render, "markdown": markdown.render,
             "text": text.render, "json": fmt_json.render}


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_no_output_links_to_a_place_that_does_not_exist(fmt: str, run: CheckRun,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANRUN_DOCS_URL", raising=False)
    out = RENDERERS[fmt](run)
    assert "canrun.io/docs" not in out and "https://canrun.io" not in out
    links = [u for u in re.findall(r"https?://[^\s\"'<>)]+", out) if "schemastore.org" not in u
             and "oasis-open.org" not in u]
    assert not links, links


@pytest.mark.parametrize("fmt", ["sarif", "github", "junit", "markdown"])
def test_a_team_that_hosts_the_docs_gets_links_to_them(fmt: str, run: CheckRun,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANRUN_DOCS_URL", "https://wiki.example.com/canrun/rules/")
    out = RENDERERS[fmt](run)
    assert "https://wiki.example.com/canrun/rules/command-not-found.md" in out
    monkeypatch.setenv("CANRUN_DOCS_URL", "https://docs.example.com/r/{rule}.html")
    assert "https://docs.example.com/r/command-not-found.html" in RENDERERS[fmt](run)


def test_sarif_results_point_at_the_containers_line(run: CheckRun) -> None:
    doc = json.loads(sarif.render(run, root="/repo", cwd="/repo"))
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    results = doc["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["command-not-found", "image-unresolvable", "not-verified",
                                              "exec-format"]
    assert [r["level"] for r in results] == ["error", "warning", "note", "error"]
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
    loc = results[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "deploy/web.yaml", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 21}
    assert results[1]["locations"][0]["physicalLocation"]["region"]["startLine"] == 30
    assert 'container "app"' in results[0]["message"]["text"]
    assert results[0]["properties"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert doc["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == "file:///repo/"


def test_sarif_stdin_findings_have_no_file_location(run: CheckRun) -> None:
    results = json.loads(sarif.render(run))["runs"][0]["results"]
    odd = results[3]
    assert "physicalLocation" not in odd["locations"][0]
    assert odd["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "Pod/default/odd/x"


def test_sarif_paths_are_made_relative_to_the_repository_root(run: CheckRun) -> None:
    f = run.report.findings[0]
    cases = {
        "sub/app.yaml": ("/repo/deploy", {"uri": "deploy/sub/app.yaml", "uriBaseId": "%SRCROOT%"}),
        "/repo/x y.yaml": ("/repo", {"uri": "x%20y.yaml", "uriBaseId": "%SRCROOT%"}),
        "/elsewhere/a.yaml": ("/repo", {"uri": "file:///elsewhere/a.yaml"}),
        "../up.yaml": ("/repo", {"uri": "file:///up.yaml"}),
    }
    for file, (cwd, expected) in cases.items():
        moved = replace(run, report=replace(run.report, findings=[replace(f, source=SourceLocation(file, 3))]))
        doc = json.loads(sarif.render(moved, root="/repo", cwd=cwd))
        assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"] == expected
        assert not list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))


def test_sarif_fingerprints_survive_moved_lines_and_tag_bumps(run: CheckRun) -> None:
    results = json.loads(sarif.render(run))["runs"][0]["results"]
    prints = [r["partialFingerprints"][sarif.FINGERPRINT_KEY] for r in results]
    assert len(set(prints)) == len(prints)
    f = run.report.findings[0]
    moved = replace(f, source=SourceLocation("deploy/web.yaml", 40), image="registry.example/web:2")
    other_container = replace(f, container="app2")
    again = replace(run, report=replace(run.report, findings=[moved, other_container]))
    prints2 = [r["partialFingerprints"][sarif.FINGERPRINT_KEY]
               for r in json.loads(sarif.render(again))["runs"][0]["results"]]
    assert prints2[0] == prints[0]
    assert prints2[1] != prints[0]


def test_sarif_unreadable_documents_are_notifications(run: CheckRun) -> None:
    inv = json.loads(sarif.render(run))["runs"][0]["invocations"][0]
    (note,) = inv["toolExecutionNotifications"]
    assert note["level"] == "error" and "mapping values" in note["message"]["text"]
    assert note["locations"][0]["physicalLocation"]["region"]["startLine"] == 4


# -- GitHub workflow commands -------------------------------------------------------------------------------


def test_github_escaping_follows_the_actions_toolkit() -> None:
    assert github.escape_data("100%\r\nnext") == "100%25%0D%0Anext"
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert github.command("warning", "m:1,2", file="a,b.yaml", line=3) == "::warning file=a%2Cb.yaml,line=3::m:1,2"


def _unescape(value: str) -> str:
    return (value.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",")
            .replace("%25", "%"))


def _parse(line: str) -> tuple[str, dict[str, str], str]:
    m = re.fullmatch(r"::(\w+)(?: ([^:]*))?::(.*)", line)
    assert m, line
    props = dict(p.split("=", 1) for p in m.group(2).split(",")) if m.group(2) else {}
    return m.group(1), {k: _unescape(v) for k, v in props.items()}, _unescape(m.group(3))


def test_github_annotations_land_on_the_file_and_line(run: CheckRun) -> None:
    out = github.render(run, root="/repo", cwd="/repo").splitlines()
    commands = [_parse(line) for line in out if line.startswith("::")]
    assert [c[0] for c in commands] == ["error", "warning", "error", "error"]  # the note is hidden
    name, props, message = commands[0]
    assert props == {"file": "deploy/web.yaml", "line": "21", "title": "canrun command-not-found"}
    assert message.startswith('Deployment default/web, container "app" (image registry.example/web:1) on '
                              "linux/amd64, linux/arm64: ")
    assert "\nFix: " in message and message.endswith("\nDetails: canrun explain command-not-found")
    # the stdin finding has no file property; its nasty message survives the round trip
    name, props, message = commands[2]
    assert "file" not in props and NASTY in message
    # the unreadable document
    assert commands[3][1]["file"] == "deploy/bad.yaml" and commands[3][1]["line"] == "4"
    assert out[-1] == run.summary_line()


def test_github_notes_only_with_verbose(run: CheckRun) -> None:
    out = github.render(run, verbose=True)
    assert out.count("::notice ") == 1 and "emptyDir" in out


# -- JUnit ----------------------------------------------------------------------------------------------


def test_junit_has_one_case_per_container_and_platform(run: CheckRun) -> None:
    root = ET.fromstring(junit.render(run))
    assert root.tag == "testsuites"
    cases = root.findall(".//testcase")
    # 5 containers x 2 platforms, plus the unreadable document
    assert len(cases) == 11
    assert root.get("tests") == "11"
    assert root.get("failures") == "3"  # app on both platforms, odd/x on amd64
    assert root.get("skipped") == "1"  # sidecar on amd64: its image could not be read
    assert root.get("errors") == "1"
    by_name = {c.get("name"): c for c in cases}
    app = by_name["Deployment/default/web/app@linux/arm64"]
    assert app.get("classname") == "deploy/web.yaml"
    failure = app.find("failure")
    assert failure is not None and failure.get("type") == "command-not-found"
    assert "deploy/web.yaml:21" in (failure.text or "")
    assert by_name["Deployment/default/web/sidecar@linux/amd64"].find("skipped") is not None
    assert by_name["Deployment/default/web/sidecar@linux/arm64"].find("skipped") is None
    job = by_name["CronJob/batch/nightly/job@linux/amd64"]
    assert job.find("failure") is None and "emptyDir" in (job.findtext("system-out") or "")
    ok = by_name["Deployment/default/ok/main@linux/amd64"]
    assert list(ok) == []
    assert by_name["Pod/default/odd/x@linux/amd64"].get("classname") == "Pod default/odd"
    assert by_name["Pod/default/odd/x@linux/arm64"].find("failure") is None


def test_junit_suite_counts_add_up(run: CheckRun) -> None:
    root = ET.fromstring(junit.render(run))
    for key in ("tests", "failures", "errors", "skipped"):
        assert sum(int(s.get(key, "0")) for s in root.findall("testsuite")) == int(root.get(key, "-1"))
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert suites["deploy/web.yaml"].get("tests") == "4"
    assert suites["deploy/bad.yaml"].find("testcase/error") is not None


def test_junit_without_recorded_targets_uses_the_findings(run: CheckRun) -> None:
    root = ET.fromstring(junit.render(replace(run, targets=[], input_errors=[])))
    names = sorted(c.get("name") or "" for c in root.findall(".//testcase"))
    assert names == ["CronJob/batch/nightly/job", "Deployment/default/web/app@linux/amd64",
                     "Deployment/default/web/app@linux/arm64", "Deployment/default/web/sidecar@linux/amd64",
                     "Pod/default/odd/x@linux/amd64"]


# -- Markdown -------------------------------------------------------------------------------------------


def test_markdown_comment_has_a_table_and_details(run: CheckRun) -> None:
    md = markdown.render(run)
    assert md.startswith(markdown.MARKER)
    assert "### ❌ canrun check: 2 errors, 1 warning in 4 workloads, 5 images checked" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "<code>" in line.split("|")[2]]
    assert len(rows) == 3  # the note is not shown without verbose
    assert "<code>deploy/web.yaml:21</code>" in rows[0]
    assert md.count("<details>") == 3
    assert "**Fix:**" in md and "deploy/bad.yaml:4" in md
    # user text cannot break the table or inject markup
    assert "<b>" not in md and "&lt;b&gt;bold&lt;/b&gt;" in md and "line &#124; " in md


def test_markdown_stays_under_the_size_budget(run: CheckRun) -> None:
    many = [replace(run.report.findings[0], container=f"c{i}") for i in range(300)]
    big = replace(run, report=replace(run.report, findings=many))
    md = markdown.render(big, max_chars=20_000)
    assert len(md) < 20_000
    assert "more finding(s) not detailed here" in md and re.search(r"and \d+ more findings", md)


def test_markdown_all_clear(run: CheckRun) -> None:
    clean = replace(run, report=replace(run.report, findings=[]), input_errors=[])
    md = markdown.render(clean)
    assert "✅" in md and "No container is predicted to fail." in md


# -- text -----------------------------------------------------------------------------------------------


def test_text_groups_by_file_then_resource_and_ends_with_the_summary(run: CheckRun) -> None:
    out = text.render(run)
    lines = out.splitlines()
    assert lines.count("deploy/web.yaml") == 1
    assert lines.count("  Deployment default/web") == 1
    assert '    deploy/web.yaml:21 container "app" (image registry.example/web:1)' in lines
    assert '    deploy/web.yaml:30 container "sidecar" (image 127.0.0.1:9/side:1)' in lines
    assert "\033[" not in out
    assert "emptyDir" not in out and "1 note(s)" in out
    assert "cannot read deploy/bad.yaml:4: mapping values" in out
    assert lines[-1] == ("2 errors, 1 warning in 4 workloads, 5 images checked, 1 unreadable document "
                         "(platforms: linux/amd64, linux/arm64)")


def test_text_colour_only_when_asked(run: CheckRun) -> None:
    assert "\033[31m" in text.render(run, colour=True)
    assert "emptyDir" in text.render(run, verbose=True)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_needs_a_tty_and_no_NO_COLOR() -> None:
    assert text.wants_colour(_Tty(), {}) is True
    assert text.wants_colour(_Tty(), {"NO_COLOR": "1"}) is False
    assert text.wants_colour(_Tty(), {"NO_COLOR": ""}) is True  # no-color.org: set *and non-empty*
    assert text.wants_colour(io.StringIO(), {}) is False


def test_summary_names_where_the_platforms_came_from(run: CheckRun) -> None:
    assert "the default; pass --platform" in replace(run, platforms_defaulted=True).summary_line()
    assert "from 3 nodes of context kind" in replace(run, platforms_from="3 nodes of context kind").summary_line()
    one = CheckRun(report=replace(run.report, findings=[run.report.findings[1]], workloads=1, images={"a"}),
                   platforms=run.platforms)
    assert one.counts_line() == "0 errors, 1 warning in 1 workload, 1 image checked"


def test_json_keeps_locations(run: CheckRun) -> None:
    doc = json.loads(fmt_json.render(run))
    assert doc["findings"][0]["location"] == {"file": "deploy/web.yaml", "line": 21}
    assert doc["summary"]["errors"] == 2


def test_every_format_handles_a_finding_outside_the_catalog(run: CheckRun) -> None:
    """A rule the output does not know (a plug-in, a newer engine) still renders everywhere."""
    odd = replace(finding("exec-format", "x", resource=WEB), rule="custom-rule", severity=Severity.WARNING)
    custom = replace(run, report=replace(run.report, findings=[odd]))
    for render in (text.render, github.render, junit.render, markdown.render, fmt_json.render):
        assert "custom-rule" in render(custom)
    doc = json.loads(sarif.render(custom))
    assert "ruleIndex" not in doc["runs"][0]["results"][0]
    assert not list(jsonschema.Draft4Validator(SCHEMA).iter_errors(doc))


@pytest.mark.parametrize("fmt", ["sarif", "github", "junit", "markdown", "text", "json"])
def test_empty_run_renders(fmt: str, run: CheckRun) -> None:
    from canrun.output import json as j
    empty = CheckRun(report=replace(run.report, findings=[], workloads=0, containers=0, images=set()),
                     platforms=run.platforms, platforms_defaulted=True)
    renders = {"sarif": sarif.render, "github": github.render, "junit": junit.render,
               "markdown": markdown.render, "text": text.render, "json": j.render}
    out = renders[fmt](empty)
    assert "0 errors" in out or '"errors": 0' in out or 'tests="0"' in out or '"results": []' in out


def test_control_characters_from_manifests_are_defused(run: CheckRun) -> None:
    """An ESC in an image name must not repaint a terminal, and must not make the JUnit file unparseable."""
    f = replace(run.report.findings[0], message="bad\x1b[2J\x00name", image="evil\x1b]0;x\x07:1")
    hostile = replace(run, report=replace(run.report, findings=[f]))
    out = text.render(hostile)
    assert "\x1b" not in out and "\\x1b[2J" in out and "\x00" not in out
    root = ET.fromstring(junit.render(hostile))  # parses: no raw control characters
    assert "\\x1b[2J" in (root.find(".//failure").text or "")  # type: ignore[union-attr]


def test_text_indents_multi_line_messages(run: CheckRun) -> None:
    lines = text.render(run).splitlines()
    i = next(n for n, line in enumerate(lines) if "50% done" in line)
    assert lines[i + 1].startswith(" " * 14 + "second line")
