"""JUnit XML for Jenkins, GitLab and every other test-report viewer.

The unit of a test here is "this container can start on this platform": one
``<testcase>`` per container × node platform its pod can land on, named
``Kind/namespace/name/container@os/arch`` with the manifest file as classname
(the resource when the input came from stdin), grouped in one ``<testsuite>``
per classname.  Outcomes:

* an error finding fails the case (``<failure>``, type = rule id);
* an ``image-unresolvable`` warning with no error skips it (``<skipped>``): the
  container was not checked, which is what "skipped" tells a reader;
* other warnings and notes go to ``<system-out>``; the case passes;
* a document canrun could not read is a case with ``<error>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from canrun.findings import Finding, Severity
from canrun.output import CheckRun, Target, finding_platforms, is_stdin

UNCHECKED_RULES = frozenset({"image-unresolvable"})
#: Characters XML 1.0 cannot carry at all, not even as references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """Text from manifests and registries with the characters XML forbids shown escaped."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass
class _Case:
    classname: str
    name: str
    findings: list[Finding] = field(default_factory=list)


def _classname(resource: str, file: str | None) -> str:
    return resource if is_stdin(file) else str(file)


def _subject(resource: str, container: str | None) -> str:
    res = resource.replace(" ", "/")
    return f"{res}/{container}" if container else res


def _targets(run: CheckRun) -> list[Target]:
    """The containers judged; rebuilt from the findings when the run did not record them."""
    if run.targets:
        return run.targets
    seen: dict[tuple[str, str | None], Target] = {}
    for f in run.report.findings + run.report.suppressed:
        if f.resource is None:
            continue
        key = (str(f.resource), f.container)
        prior = seen.get(key)
        plats = tuple(dict.fromkeys((prior.platforms if prior else ()) + tuple(finding_platforms(f))))
        seen[key] = Target(f.resource, f.container or "", f.image or "", f.source, plats)
    return list(seen.values())


def _cases(run: CheckRun) -> list[_Case]:
    cases: dict[tuple[str, str | None, str | None], _Case] = {}
    by_subject: dict[tuple[str, str | None], list[str | None]] = {}
    for t in _targets(run):
        container = t.container or None
        plats: list[str | None] = list(t.platforms) or [None]
        by_subject[(str(t.resource), container)] = plats
        for p in plats:
            name = _subject(str(t.resource), container) + (f"@{p}" if p else "")
            cases[(str(t.resource), container, p)] = _Case(
                _classname(str(t.resource), t.source.file if t.source else None), name)

    for f in run.report.findings:
        resource = str(f.resource) if f.resource else "input"
        # a finding without a container (the pod cannot be placed) concerns every container of the resource
        containers = [f.container] if f.container else [c for (r, c) in by_subject if r == resource] or [None]
        for container in containers:
            plats: list[str | None] = list(finding_platforms(f)) or by_subject.get((resource, container), [None])
            for p in plats:
                key = (resource, container, p)
                if key not in cases:
                    name = _subject(resource, container) + (f"@{p}" if p else "")
                    cases[key] = _Case(_classname(resource, f.source.file if f.source else None), name)
                cases[key].findings.append(f)
    return list(cases.values())


def _describe(f: Finding) -> str:
    where = f" ({f.source})" if f.source and f.source.file else ""
    image = f"\n  image: {f.image}" if f.image else ""
    url = f.docs_url
    more = f"docs: {url}" if url else f"details: canrun explain {f.rule}"
    return f"[{f.severity.value}] {f.rule}{where}: {f.message}{image}\n  fix: {f.hint}\n  {more}"


def render(run: CheckRun) -> str:
    suites: dict[str, ET.Element] = {}
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    platforms = ", ".join(str(p) for p in run.platforms)

    def suite(classname: str) -> ET.Element:
        if classname not in suites:
            el = ET.Element("testsuite", name=classname)
            el.attrib.update({k: "0" for k in totals})
            props = ET.SubElement(el, "properties")
            ET.SubElement(props, "property", name="platforms", value=platforms)
            suites[classname] = el
        return suites[classname]

    def bump(el: ET.Element, key: str) -> None:
        el.set(key, str(int(el.get(key, "0")) + 1))
        totals[key] += 1

    for case in _cases(run):
        el = suite(case.classname)
        tc = ET.SubElement(el, "testcase", classname=case.classname, name=case.name)
        bump(el, "tests")
        errors = [f for f in case.findings if f.severity is Severity.ERROR]
        others = [f for f in case.findings if f.severity is not Severity.ERROR]
        if errors:
            failure = ET.SubElement(tc, "failure", type=errors[0].rule,
                                    message=f"{errors[0].rule}: {errors[0].message}")
            failure.text = "\n".join(_describe(f) for f in errors)
            bump(el, "failures")
        elif any(f.rule in UNCHECKED_RULES for f in others):
            first = next(f for f in others if f.rule in UNCHECKED_RULES)
            ET.SubElement(tc, "skipped", message=f"not checked: {first.message}")
            bump(el, "skipped")
        if others:
            ET.SubElement(tc, "system-out").text = "\n".join(_describe(f) for f in others)

    for err in run.input_errors:
        classname = "<stdin>" if is_stdin(err.source) else str(err.source)
        el = suite(classname)
        name = f"read document at line {err.line}" if err.line else "read file"
        tc = ET.SubElement(el, "testcase", classname=classname, name=name)
        ET.SubElement(tc, "error", type="unreadable-manifest", message=str(err)).text = str(err)
        bump(el, "tests")
        bump(el, "errors")

    root = ET.Element("testsuites", name="canrun check")
    root.attrib.update({k: str(v) for k, v in totals.items()})
    root.extend(suites.values())
    ET.indent(root)
    # one pass over the serialized document: forbidden characters never occur in markup we write
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + xml_text(ET.tostring(root, encoding="unicode")) + "\n"
