"""Tests of the HTML report (``taskchaos run --html``, pytest_taskchaos._html.render_html)."""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_taskchaos._history import Event, EventKind
from pytest_taskchaos._html import render_html
from pytest_taskchaos.cli import main
from pytest_taskchaos.runner import ExpectationResult, ScenarioResult, run_scenario
from pytest_taskchaos.scenario import (
    Scenario,
    TaskCall,
    Workload,
    load_scenarios,
    load_scenarios_text,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

SCENARIOS = Path(__file__).parents[2] / "scenarios"
APP = "examples.taskapp.scenario_app:make_scenario_app"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Escalations while the mail API refuses connections (retries, an open breaker,
# deferrals) and PPM jobs missing a setting (dead letters); two expectations fail.
MIX = f"""
name: small-mix
description: Escalations while the mail API refuses connections; PPM jobs miss a setting
seed: 3
app: {APP}
tasks:
  - name: taskapp.create_ppm_job
    kwargs: {{schedule_id: "{{n}}", due_date: "2025-11-01"}}
  - name: taskapp.ticket_escalation
    kwargs: {{ticket_id: "{{n}}"}}
    weight: 3
workload: {{count: 16, arrival: {{pattern: uniform, over: 4m}}}}
faults:
  - fault: missing_setting
    task: taskapp.create_ppm_job
    setting: PPM_CALENDAR_URL
    times: 2
  - fault: connection_refused
    at: examples.taskapp.external.MailAPI.send
    window: {{start: 30s, end: 3m}}
policies:
  TRANSIENT_NETWORK: {{max_retries: 4, initial_delay: 20s, jitter: none}}
expect:
  completion_ratio: 1.0
  max_dlq: 0
"""
HOSTILE = "<script>alert(1)</script>"
TIMES = "\u00d7"  # the DLQ table's "KeyError x2"
_VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "wbr", "source"})
_REFERENCES = frozenset({"src", "href", "xlink:href", "action", "poster", "data", "srcset"})


class _Walker(HTMLParser):
    """Checks that tags nest and close, and records tags, references and table cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: Counter[str] = Counter()
        self.references: list[str] = []
        self.handlers: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        values = dict(attrs)
        self.references += [value or "" for name, value in attrs if name in _REFERENCES]
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "table" and values.get("class"):
            self._table = str(values["class"])
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def _walk(page: str) -> _Walker:
    walker = _Walker()
    walker.feed(page)
    walker.close()
    assert walker.errors == []
    assert walker.stack == []
    return walker


def _event(kind: EventKind, at: float, task_id: str, attempt: int = 1, **details: Any) -> Event:
    return Event(
        kind=kind,
        at=at,
        task_name=details.pop("task", "taskapp.ticket_escalation"),
        task_id=task_id,
        attempt=attempt,
        details=details,
    )


def _retry(at: float, task_id: str, delay: float, *, attempt: int = 1) -> list[Event]:
    """A failed run that the engine retries after ``delay`` as TRANSIENT_NETWORK."""
    reason = f"TRANSIENT_NETWORK: retry {attempt} in {delay}s"
    return [
        _event(EventKind.STARTED, at, task_id, attempt),
        _event(EventKind.RAISED, at, task_id, attempt, exception="ConnectionError", message="x"),
        _event(
            EventKind.DECIDED,
            at,
            task_id,
            attempt,
            action="retry",
            delay=delay,
            failure_type="TRANSIENT_NETWORK",
            reason=reason,
        ),
        _event(EventKind.RETRIED, at, task_id, attempt, countdown=delay, deferred=False),
    ]


def _dead_letter(at: float, task_id: str, failure_type: str, exception: str) -> list[Event]:
    return [
        _event(EventKind.STARTED, at, task_id, task="taskapp.create_ppm_job"),
        _event(
            EventKind.RAISED,
            at,
            task_id,
            task="taskapp.create_ppm_job",
            exception=exception,
            message=f"{exception} in {task_id}",
        ),
        _event(
            EventKind.DEAD_LETTERED,
            at,
            task_id,
            task="taskapp.create_ppm_job",
            exception=exception,
            failure_type=failure_type,
        ),
    ]


def _result(
    events: list[Event],
    *,
    name: str = "synthetic",
    tasks: tuple[TaskCall, ...] = (TaskCall(name="taskapp.ticket_escalation"),),
    expectations: tuple[ExpectationResult, ...] = (),
    description: str = "",
) -> ScenarioResult:
    scenario = Scenario(
        name=name, app=APP, tasks=tasks, workload=Workload(count=1), description=description
    )
    return ScenarioResult(
        scenario=scenario,
        seed=0,
        passed=all(expectation.passed for expectation in expectations),
        expectations=expectations,
        history=tuple(events),
    )


def _titles(markup: str) -> list[str]:
    return [html.unescape(title) for title in re.findall(r"<title>(.*?)</title>", markup)]


@pytest.fixture(scope="module")
def mix() -> ScenarioResult:
    """One run of the small mixed scenario (retries, a breaker, dead letters, failures)."""
    [scenario] = load_scenarios_text(MIX, source="scenarios/small-mix.yaml")
    return run_scenario(scenario)


@pytest.fixture(scope="module")
def shipped() -> list[ScenarioResult]:
    """Every shipped scenario, run once with its own seed."""
    return [run_scenario(scenario) for scenario in load_scenarios(SCENARIOS)]


# --------------------------------------------------------------------------- content


def test_small_run_has_every_section(mix: ScenarioResult) -> None:
    """Verdict, failed expectations, timeline, retry chart, faults, DLQ and workload all appear."""
    page = render_html([mix])
    walker = _walk(page)
    assert page.startswith("<!DOCTYPE html>")
    assert '<h2 class="scenario-title">small-mix</h2><span class="verdict fail">FAIL</span>' in page
    assert "<b>completion_ratio</b>: expected &gt;= 1, measured 0.875 (14/16 tasks)" in page
    assert "re-run: <code>taskchaos run scenarios/small-mix.yaml --seed 3</code>" in page
    assert '<svg class="timeline"' in page
    assert '<svg class="retry-chart"' in page
    for heading in ("Expectations", "Timeline (virtual time)", "Faults", "Workload"):
        assert f"<h3>{heading}</h3>" in page
    assert walker.tables["overview"][1][:2] == ["small-mix", "FAIL"]
    assert [row[3] for row in walker.tables["expectations"][1:]] == ["ok", "FAIL", "FAIL"]
    [_, dlq] = walker.tables["dlq"]
    assert dlq[:4] == [
        "CONFIG_MISSING_SETTING",
        "2",
        f"KeyError {TIMES}2",
        f"taskapp.create_ppm_job {TIMES}2",
    ]


def test_timeline_shows_faults_breaker_states_and_dead_letters(mix: ScenarioResult) -> None:
    """The timeline has a row per fault, the breaker's band and the dead-letter markers."""
    page = render_html([mix])
    timeline = page.split('<svg class="timeline"')[1].split("</svg>")[0]
    assert ">fault missing_setting (2)</text>" in timeline
    assert ">fault connection_refused (3)</text>" in timeline
    assert ">breaker mail-api</text>" in timeline
    assert ">dead letters (2)</text>" in timeline
    states = [title.split(" from ")[0] for title in _titles(timeline) if title.startswith("mail-")]
    assert states == ["mail-api closed", "mail-api open", "mail-api half_open", "mail-api closed"]
    # 16 tasks: one lane per task id, one dot per run.
    assert timeline.count("<circle") == mix.measures["attempts"]


def test_breaker_band_spans_each_state_until_the_next_change() -> None:
    """Each breaker state is drawn from its change to the next one, the last until the end."""
    events = [
        _event(EventKind.BREAKER_CHANGED, 10, "a", breaker="mail-api", old="closed", new="open"),
        _event(EventKind.BREAKER_CHANGED, 70, "a", breaker="mail-api", old="open", new="half_open"),
        _event(
            EventKind.BREAKER_CHANGED, 70, "a", breaker="mail-api", old="half_open", new="closed"
        ),
        _event(EventKind.SUCCEEDED, 100, "a"),
    ]
    titles = [t for t in _titles(render_html([_result(events)])) if t.startswith("mail-api")]
    assert titles == [
        "mail-api closed from 0s to 10s",
        "mail-api open from 10s to 1.2m",
        "mail-api half_open from 1.2m to 1.2m",
        "mail-api closed from 1.2m to 1.7m",
    ]


def test_retry_chart_plots_each_retry_against_the_scenario_policy(mix: ScenarioResult) -> None:
    """Every retry is a point; the envelope is the scenario's override, named as such."""
    page = render_html([mix])
    chart = page.split('<svg class="retry-chart"')[1].split("</svg>")[0]
    assert chart.count("<circle") == mix.measures["retries"]
    # The override: 20 s doubling, no jitter, 4 retries: the envelope is a line per retry.
    envelope = [t for t in _titles(chart) if "policy envelope" in t]
    assert envelope == [
        "TRANSIENT_NETWORK policy envelope for retry 1: 20s-20s",
        "TRANSIENT_NETWORK policy envelope for retry 2: 40s-40s",
        "TRANSIENT_NETWORK policy envelope for retry 3: 1.3m-1.3m",
        "TRANSIENT_NETWORK policy envelope for retry 4: 2.7m-2.7m",
    ]
    [_, row] = _walk(page).tables["policies"]
    assert row[1] == "exponential from 20s x2, cap 1.00h, 4 retries, jitter none (scenario)"
    assert "9 deferrals (an open breaker or a busy idempotency key)" in page


def test_retry_chart_uses_the_default_policy_and_counts_retries_outside_it() -> None:
    """Without an override the default policy is drawn; a retry outside it is counted and shown."""
    events = [*_retry(0, "a", 60.0), *_retry(5, "b", 600.0)]
    page = render_html([_result(events)])
    [_, row] = _walk(page).tables["policies"]
    assert row[0] == "TRANSIENT_NETWORK"
    assert row[1].endswith("3 retries, jitter proportional (default)")
    assert row[2:] == ["2", "1", "10.0m; decided: TRANSIENT_NETWORK: retry 1 in 600.0s"]


def test_no_retries_and_no_dead_letters_say_so() -> None:
    """A run without retries or dead letters says so instead of drawing empty charts."""
    events = [_event(EventKind.STARTED, 0, "a"), _event(EventKind.SUCCEEDED, 1, "a")]
    page = render_html([_result(events)])
    assert '<p class="no-retries">No retries after a failure.</p>' in page
    assert '<p class="empty-dlq">Nothing was dead-lettered.</p>' in page
    assert "retry-chart" not in page


def test_dead_letters_are_grouped_by_failure_type() -> None:
    """The DLQ table has one row per failure type with its count, exceptions and tasks."""
    events = [
        *_dead_letter(1, "t1", "CONFIG_MISSING_SETTING", "KeyError"),
        *_dead_letter(2, "t2", "PERMANENT_VALIDATION", "ValueError"),
        *_dead_letter(3, "t3", "CONFIG_MISSING_SETTING", "KeyError"),
    ]
    walker = _walk(render_html([_result(events)]))
    rows = walker.tables["dlq"][1:]
    assert [row[:6] for row in rows] == [
        [
            "CONFIG_MISSING_SETTING",
            "2",
            f"KeyError {TIMES}2",
            f"taskapp.create_ppm_job {TIMES}2",
            "1s",
            "3s",
        ],
        [
            "PERMANENT_VALIDATION",
            "1",
            f"ValueError {TIMES}1",
            f"taskapp.create_ppm_job {TIMES}1",
            "2s",
            "2s",
        ],
    ]
    assert rows[0][6] == "KeyError in t1"


def test_large_workloads_are_aggregated_into_a_histogram() -> None:
    """Above 40 task ids the timeline is a histogram of runs per time bin, not one lane each."""
    events = [
        event
        for i in range(300)
        for event in (
            _event(EventKind.STARTED, i, f"task-{i}"),
            _event(EventKind.SUCCEEDED, i, f"task-{i}"),
        )
    ]
    page = render_html([_result(events)])
    timeline = page.split('<svg class="timeline"')[1].split("</svg>")[0]
    assert ">runs started per 2s</text>" in timeline
    assert "<circle" not in timeline
    assert "task-0" not in timeline
    assert timeline.count("<rect") == 150  # 300 s in 2 s bins


def test_hostile_text_is_escaped() -> None:
    """Task names, arguments, messages, reasons and labels from a run cannot inject markup."""
    task = TaskCall(
        name=HOSTILE, args=(HOSTILE,), kwargs={"note": '"><img src=x onerror=alert(2)>'}
    )
    events = [
        _event(EventKind.STARTED, 0, "a", task=HOSTILE),
        _event(EventKind.FAULT_INJECTED, 0, "a", task=HOSTILE, fault="<i>fault</i>"),
        _event(EventKind.RAISED, 0, "a", task=HOSTILE, exception="<b>E</b>", message=HOSTILE),
        _event(EventKind.DEAD_LETTERED, 0, "a", task=HOSTILE, failure_type=HOSTILE),
        _event(EventKind.BREAKER_CHANGED, 0, "a", breaker="<svg onload=alert(3)>", old="closed",
               new="open"),
        *_retry(1, "<img src=x>", 60.0),
    ]  # fmt: skip
    failed = ExpectationResult(name="<u>x</u>", expected="<= 0", measured=HOSTILE, passed=False)
    page = render_html(
        [_result(events, tasks=(task,), expectations=(failed,), description=HOSTILE)],
        title=HOSTILE,
    )
    walker = _walk(page)
    assert walker.tags["script"] == 1  # the report's own
    assert set(walker.tags) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "button",
        "table", "thead", "tbody", "tr", "th", "td", "a", "span", "details", "summary", "br",
        "code", "div", "b", "ul", "li", "svg", "text", "line", "rect", "circle", "script",
    }  # fmt: skip
    assert walker.handlers == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert page.count("<script") == 1


def test_no_external_resources(mix: ScenarioResult) -> None:
    """The page references nothing outside itself: only in-page anchors, no URLs in CSS."""
    page = render_html([mix])
    walker = _walk(page)
    assert walker.references
    assert all(reference.startswith("#") for reference in walker.references)
    assert "url(" not in page
    assert "@import" not in page
    assert walker.tags["link"] == 0


def test_same_results_render_the_same_page(mix: ScenarioResult) -> None:
    """Rendering depends on the results only (no clock): a re-run with the seed diffs clean."""
    assert render_html([mix]) == render_html([mix])


def test_shipped_scenarios_stay_small(shipped: list[ScenarioResult]) -> None:
    """All shipped scenarios in one report stay under 2 MB, aggregated but complete."""
    page = render_html(shipped)
    walker = _walk(page)
    assert len(page.encode()) < 2_000_000
    assert page.count('<details class="scenario"') == len(shipped) >= 8
    assert page.count('<svg class="timeline"') == len(shipped)
    assert [row[0] for row in walker.tables["overview"][1:]] == [r.scenario.name for r in shipped]


# --------------------------------------------------------------------------- the command


def _write(folder: Path, text: str) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_html_writes_the_report_and_keeps_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--html writes the report; a failing scenario still exits 1 and prints its table."""
    out = tmp_path / "report.html"
    assert main(["run", str(_write(tmp_path, MIX)), "--html", str(out)]) == 1
    assert "small-mix" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    _walk(page)
    assert '<span class="verdict fail">FAIL</span>' in page


def test_cli_html_with_a_passing_scenario_exits_0(tmp_path: Path) -> None:
    """A passing scenario exits 0 and its report says PASS."""
    text = f"""
name: quick
app: {APP}
tasks: [{{name: taskapp.autoclose_job, kwargs: {{job_id: "{{n}}"}}}}]
workload: {{count: 3}}
expect: {{completion_ratio: 1.0}}
"""
    out = tmp_path / "report.html"
    assert main(["run", str(_write(tmp_path, text)), "--html", str(out)]) == 0
    assert '<span class="verdict pass">PASS</span>' in out.read_text(encoding="utf-8")


def test_cli_html_is_not_written_for_invalid_input(tmp_path: Path) -> None:
    """Invalid input exits 2 and writes no report."""
    out = tmp_path / "report.html"
    path = _write(tmp_path, MIX.replace("workload:", "workloda:"))
    assert main(["run", str(path), "--html", str(out)]) == 2
    assert not out.exists()


# --------------------------------------------------------------------------- in a browser


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright; skipped locally without it, required in CI."""
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed"
    if not reason and not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (Debian package 'chromium')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the browser test must run")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_report_renders_in_chromium(mix: ScenarioResult, tmp_path: Path, browser: Any) -> None:
    """Chromium shows the title, verdict, timeline, retry chart and DLQ table, fetching nothing."""
    report = tmp_path / "report.html"
    report.write_text(render_html([mix]), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console)
    page.goto(report.as_uri())
    section = page.locator("details.scenario")
    assert section.locator(".scenario-title").inner_text() == "small-mix"
    for selector in (".verdict.fail", "svg.timeline", "svg.retry-chart", "table.dlq"):
        element = section.locator(selector)
        element.scroll_into_view_if_needed()
        assert element.is_visible(), selector
        box = element.bounding_box()
        assert box is not None
        assert box["width"] > 100 or selector.startswith(".verdict"), selector
        assert box["height"] > 10, selector
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.get_by_role("button", name="collapse all").click()
    assert not section.locator("svg.timeline").is_visible()
    page.get_by_role("button", name="expand all").click()
    assert section.locator("svg.timeline").is_visible()
    assert requests == [report.as_uri()]
    assert problems == []
