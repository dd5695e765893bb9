"""The HTML report in a real headless Chromium: no console errors, numbers equal the JSON, sort and filter work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from canrun.audit import document, html
from tests.audit.cdp import CHROMIUM, Browser
from tests.audit.test_reports import HOSTILE, sample_run

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")

SCREENSHOT_DIR = Path(os.environ.get("CANRUN_SCREENSHOTS", "/tmp/canrun-screenshots"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = sample_run()
    path = tmp_path_factory.mktemp("html") / "audit.html"
    path.write_text(html.render(run), encoding="utf-8")
    return path, document.audit_document(run)


def test_page_loads_without_console_errors_and_shows_the_json_numbers(browser: Browser, report_page) -> None:
    path, doc = report_page
    browser.open(path.as_uri())
    assert browser.console_errors() == []
    cards = browser.eval("""Object.fromEntries([...document.querySelectorAll('#summary .card')]
        .map(c => [c.dataset.metric, Number(c.querySelector('.num').textContent)]))""")
    embedded = browser.eval("JSON.parse(document.getElementById('canrun-data').textContent).summary")
    for metric, value in cards.items():
        assert value == doc["summary"][metric] == embedded[metric], metric
    assert set(cards) >= {"errors", "warnings", "infos", "workloads", "failing_workloads", "images"}
    rules = browser.eval("""Object.fromEntries([...document.querySelectorAll('#by-rule tbody tr')]
        .map(r => [r.dataset.rule, Number(r.querySelector('[data-col=findings]').textContent)]))""")
    assert rules == {r["rule"]: r["findings"] for r in doc["by_rule"]}
    namespaces = browser.eval("""[...document.querySelectorAll('#by-namespace tbody tr')]
        .map(r => [r.dataset.namespace, Number(r.querySelector('[data-col=error]').textContent),
                   Number(r.querySelector('[data-col=workloads]').textContent)])""")
    assert namespaces == [[n["namespace"], n["error"], n["workloads"]] for n in doc["by_namespace"]]
    rows = browser.eval("document.querySelectorAll('#findings tbody tr').length")
    assert rows == len(doc["findings"]) + len(doc["suppressed"])
    assert browser.eval("document.getElementById('shown-count').textContent") == str(rows)
    # the hostile image name is shown as text, and no injected script ran
    assert browser.eval("document.body.textContent.includes('</script><script>alert(1)')") is True
    assert browser.eval("document.querySelectorAll('script').length") == 2
    shot = browser.screenshot(_shot_dir() / "audit-report.png")
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sorting_the_findings_table(browser: Browser, report_page) -> None:
    path, _ = report_page
    browser.open(path.as_uri())
    column = "[...document.querySelectorAll('#findings tbody tr')].map(r => r.cells[%d].textContent.trim())"
    browser.eval("window.canrunReport.sortBy(3)")  # workload, ascending
    names = browser.eval(column % 3)
    assert names == sorted(names, key=str.lower)
    browser.eval("window.canrunReport.sortBy(3)")  # again: descending
    assert browser.eval(column % 3) == sorted(names, key=str.lower, reverse=True)
    # severity sorts by rank (error < warning < info < exempt), not alphabetically; clicking the header works too
    browser.eval("document.querySelector('#findings th[data-col=\"0\"]').click()")
    severities = browser.eval(column % 0)
    rank = {"error": 0, "warning": 1, "info": 2, "exempt": 6}
    assert [rank[s] for s in severities] == sorted(rank[s] for s in severities)
    assert browser.eval("document.querySelector('#findings th[data-col=\"0\"]').getAttribute('aria-sort')") == "ascending"
    assert browser.console_errors() == []


def test_filtering_the_findings_table(browser: Browser, report_page) -> None:
    path, doc = report_page
    browser.open(path.as_uri())
    visible = "[...document.querySelectorAll('#findings tbody tr')].filter(r => !r.hidden)"

    def type_filter(text: str) -> None:
        browser.eval(f"""(() => {{ const f = document.getElementById('filter'); f.value = {text!r};
            f.dispatchEvent(new Event('input')); }})()""")

    type_filter("web")
    rows = browser.eval(f"{visible}.map(r => r.cells[3].textContent)")
    assert rows and all("web" in r for r in rows)
    assert browser.eval("document.getElementById('shown-count').textContent") == str(len(rows))
    type_filter("ops backup")  # every word must match
    assert browser.eval(f"{visible}.map(r => r.cells[1].textContent)") == ["image-unresolvable"]
    type_filter("")
    browser.eval("""(() => { const s = document.getElementById('severity-filter'); s.value = 'error';
        s.dispatchEvent(new Event('change')); })()""")
    assert browser.eval(f"{visible}.length") == doc["summary"]["errors"]
    browser.screenshot(_shot_dir() / "audit-report-filtered.png")
    assert browser.console_errors() == []


def _shot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


def test_hostile_name_round_trips(report_page) -> None:
    _, doc = report_page
    assert any(f.get("image") == HOSTILE for f in doc["findings"])
