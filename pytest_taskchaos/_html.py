"""The ``taskchaos run --html`` report: scenario results as one self-contained HTML page.

The page loads nothing (inline CSS, inline SVG, one small inline script for the
expand/collapse buttons), so a CI artifact opens offline. Per scenario it shows:

- the verdict, the failed expectations (expected vs measured) and every expectation;
- a timeline in virtual time: each fault's firings, the runs (one lane per task id
  for small workloads, else a histogram of runs per time bin by outcome), each
  circuit breaker's state as a band, and the dead-letter writes;
- a retry-delay chart: each retry's countdown against its retry number, over the
  envelope (``RetryPolicy.envelope``) of the effective policy of its failure type:
  the scenario's ``policies`` entry, else :func:`resilience.default_policy`;
- the dead-letter entries grouped by failure type, and the workload's tasks.

Every text from the run (task names, arguments, exception messages) is escaped.
Large histories are aggregated: at most ``_MAX_BINS`` time bins per timeline and
``_MAX_POINTS`` plotted retries per failure type, so the shipped scenarios make a
page well under 2 MB. The output depends only on the results (no clock, no
randomness): the same seed gives the same page.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pytest_taskchaos._history import EventKind
from resilience import FailureType, RetryPolicy, default_policy

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from pytest_taskchaos._history import Event
    from pytest_taskchaos.runner import ScenarioResult

__all__ = ["render_html"]

_MAX_BINS: Final = 180
_MAX_LANES: Final = 40
_MAX_POINTS: Final = 1500
_MAX_DLQ_ROWS: Final = 25
_STEPS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600)
_W, _LEFT, _RIGHT = 960, 190, 16
_PLOT: Final = _W - _LEFT - _RIGHT

# Run outcomes, by rank: a run that was both dead-lettered and failed shows as dead-lettered.
_OUTCOMES: Final = ("other", "succeeded", "deferred", "retried", "worker lost", "failed", "dlq")
_PALETTE: Final = ("#b0bec5", "#2e7d32", "#64b5f6", "#ef6c00", "#8e24aa", "#e57373", "#b71c1c")
_COLORS: Final = dict(zip(_OUTCOMES, _PALETTE, strict=True))
_OUTCOME_OF: Final = {
    EventKind.SUCCEEDED: "succeeded",
    EventKind.RETRIED: "retried",
    EventKind.WORKER_LOST: "worker lost",
    EventKind.FAILED: "failed",
    EventKind.DEAD_LETTERED: "dlq",
}
_BREAKER_COLORS: Final = {"closed": "#a5d6a7", "open": "#e53935", "half_open": "#ffb300"}
_BAD: Final = ' class="bad"'
_TYPE_COLORS: Final = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f")

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;
max-width:1040px;padding:16px 20px;color:#212121;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{display:inline;font-size:18px;margin:0}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eceff1;font-weight:600}td.num{text-align:right}
.verdict{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-weight:700;
margin-left:8px;font-size:13px}.pass{background:#2e7d32}.fail{background:#c62828}
tr.bad td{background:#ffebee}details.scenario{background:#fff;border:1px solid #cfd8dc;
border-radius:6px;margin:14px 0;padding:8px 14px}
details.scenario>summary{cursor:pointer;padding:4px 0}
.meta{color:#546e7a;font-size:13px}.failures{border-left:4px solid #c62828;
background:#ffebee;padding:6px 10px;margin:8px 0}.failures li{margin:2px 0}
svg{display:block;width:100%;height:auto;background:#fff}svg text{font-size:11px;fill:#37474f}
.legend{list-style:none;padding:0;margin:4px 0;font-size:12px}
.legend li{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;
border-radius:2px}code{font-size:12px;word-break:break-all}
button{font:inherit;margin-right:6px}
"""
_SCRIPT: Final = """document.querySelectorAll("button[data-open]").forEach(function (b) {
b.addEventListener("click", function () { var open = b.dataset.open === "1";
document.querySelectorAll("details.scenario").forEach(function (d) { d.open = open; }); }); });"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.3g}s"


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


# --------------------------------------------------------------------------- digesting a history


@dataclass(slots=True)
class _Run:
    at: float
    task_id: str
    attempt: int
    outcome: str = "other"


@dataclass(frozen=True, slots=True)
class _Retry:
    failure_type: str
    number: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class _Letter:
    at: float
    task_name: str
    task_id: str
    attempt: int
    failure_type: str
    exception: str
    message: str


@dataclass(slots=True)
class _Digest:
    end: float
    runs: list[_Run] = field(default_factory=list)
    faults: dict[str, list[float]] = field(default_factory=dict)
    retries: list[_Retry] = field(default_factory=list)
    deferred: int = 0
    letters: list[_Letter] = field(default_factory=list)
    breakers: dict[str, list[tuple[float, str, str]]] = field(default_factory=dict)
    spans: dict[str, tuple[str, float, float]] = field(default_factory=dict)


def _digest(history: Sequence[Event], duration: float) -> _Digest:
    """One pass over the history: runs and their outcomes, faults, retries, dead letters."""
    found = _Digest(end=max([duration, 1.0, *(event.at for event in history[-1:])]))
    current: dict[str, _Run] = {}
    decided: dict[tuple[str, int], tuple[str, str]] = {}
    raised: dict[tuple[str, int], tuple[str, str]] = {}
    retried: Counter[str] = Counter()
    for event in history:
        kind, tid, details = event.kind, event.task_id, event.details
        run_key = (tid, event.attempt)
        name, first, _ = found.spans.get(tid, (event.task_name, event.at, event.at))
        found.spans[tid] = (name, first, event.at)
        if kind is EventKind.STARTED:
            current[tid] = run = _Run(at=event.at, task_id=tid, attempt=event.attempt)
            found.runs.append(run)
        outcome = _OUTCOME_OF.get(kind)
        if kind is EventKind.RETRIED and details.get("deferred"):
            outcome = "deferred"
        run_now = current.get(tid)
        if outcome and run_now and _OUTCOMES.index(outcome) > _OUTCOMES.index(run_now.outcome):
            run_now.outcome = outcome
        if kind is EventKind.FAULT_INJECTED:
            found.faults.setdefault(str(details.get("fault")), []).append(event.at)
        elif kind is EventKind.RAISED:
            raised[run_key] = (str(details.get("exception")), str(details.get("message", "")))
        elif kind is EventKind.DECIDED:
            decided[run_key] = (str(details.get("failure_type")), str(details.get("reason", "")))
        elif kind is EventKind.RETRIED:
            if details.get("deferred"):
                found.deferred += 1
            else:
                retried[tid] += 1
                delay = float(details.get("countdown") or 0.0)
                kind_name, reason = decided.get(run_key, ("unclassified", ""))
                found.retries.append(_Retry(kind_name, retried[tid], delay, reason))
        elif kind is EventKind.DEAD_LETTERED:
            exception, message = raised.get(run_key, (str(details.get("exception")), ""))
            kind_name = str(details.get("failure_type"))
            letter = _Letter(
                event.at, event.task_name, tid, event.attempt, kind_name, exception, message
            )
            found.letters.append(letter)
        elif kind is EventKind.BREAKER_CHANGED:
            changes = found.breakers.setdefault(str(details.get("breaker")), [])
            changes.append((event.at, str(details.get("old")), str(details.get("new"))))
    return found


# --------------------------------------------------------------------------- drawing


@dataclass(slots=True)
class _Svg:
    """SVG elements drawn top to bottom; ``y`` is where the next row starts."""

    css: str
    label: str
    y: float = 10.0
    parts: list[str] = field(default_factory=list)

    def text(self, x: float, y: float, text: str, *, anchor: str = "end", extra: str = "") -> None:
        text = text if len(text) <= 32 else text[:31] + "\u2026"
        self.parts.append(
            f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{_esc(text)}</text>'
        )

    def line(self, x1: float, x2: float, y1: float, y2: float, *, stroke: str) -> None:
        self.parts.append(
            f'<line x1="{_n(x1)}" x2="{_n(x2)}" y1="{_n(y1)}" y2="{_n(y2)}" stroke="{stroke}"/>'
        )

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str, title: str) -> None:
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{max(w, 1.0):.1f}" height="{max(h, 1.0):.1f}"'
            f' fill="{fill}"><title>{_esc(title)}</title></rect>'
        )

    def dot(self, x: float, y: float, *, fill: str, title: str, r: float = 4.0) -> None:
        self.parts.append(
            f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{r:g}" fill="{fill}">'
            f"<title>{_esc(title)}</title></circle>"
        )

    def render(self, height: float) -> str:
        return (
            f'<svg class="{self.css}" viewBox="0 0 {_W} {_n(height)}" role="img" '
            f'aria-label="{_esc(self.label)}">{"".join(self.parts)}</svg>'
        )


def _legend(items: Iterable[tuple[str, str]]) -> str:
    cells = "".join(
        f'<li><span class="sw" style="background:{color}"></span>{_esc(text)}</li>'
        for color, text in items
    )
    return f'<ul class="legend">{cells}</ul>'


# --------------------------------------------------------------------------- the timeline


@dataclass(slots=True)
class _Axis:
    end: float
    step: float

    def x(self, at: float) -> float:
        return _LEFT + min(max(at, 0.0), self.end) / self.end * _PLOT

    def width(self) -> float:
        return self.step / self.end * _PLOT - 0.4


def _step(end: float, most: int) -> float:
    return next((step for step in _STEPS if end / step <= most), end / most)


def _marks(svg: _Svg, axis: _Axis, times: Sequence[float], *, fill: str, what: str) -> None:
    """A row of bars, one per time bin holding any of ``times``, as tall as its count."""
    shown = what if len(what) <= 24 else what[:23] + "\u2026"
    svg.text(_LEFT - 8, svg.y + 13, f"{shown} ({len(times)})")
    counts = Counter(int(at // axis.step) for at in times)
    most = max(counts.values())
    for index, count in sorted(counts.items()):
        height, at = 4 + 12 * count / most, index * axis.step
        title = f"{what}: {count} at {_span(at)}-{_span(at + axis.step)}"
        svg.rect(axis.x(at), svg.y + 16 - height, axis.width(), height, fill=fill, title=title)
    svg.y += 24


def _lanes(svg: _Svg, axis: _Axis, found: _Digest) -> None:
    """One lane per task id: its life as a line, each run as a dot colored by outcome."""
    by_task: dict[str, list[_Run]] = defaultdict(list)
    for run in found.runs:
        by_task[run.task_id].append(run)
    for tid, (name, first, last) in found.spans.items():
        mid = svg.y + 7
        svg.text(_LEFT - 8, mid + 4, f"{name.rsplit('.', 1)[-1]} {tid[:8]}")
        svg.line(axis.x(first), axis.x(last), mid, mid, stroke="#90a4ae")
        for run in by_task[tid]:
            title = f"{name} [{tid}] attempt {run.attempt} at {_span(run.at)}: {run.outcome}"
            svg.dot(axis.x(run.at), mid, fill=_COLORS[run.outcome], title=title)
        svg.y += 16
    svg.y += 6


def _histogram(svg: _Svg, axis: _Axis, found: _Digest) -> None:
    """Runs started per time bin, stacked by outcome."""
    bins: dict[int, Counter[str]] = defaultdict(Counter)
    for run in found.runs:
        bins[int(run.at // axis.step)][run.outcome] += 1
    most = max((sum(counts.values()) for counts in bins.values()), default=1)
    height = 120.0
    svg.text(_LEFT - 8, svg.y + height / 2, f"runs started per {_span(axis.step)}")
    svg.text(_LEFT - 8, svg.y + height / 2 + 14, f"(most: {most})")
    for index, counts in sorted(bins.items()):
        base = svg.y + height
        for outcome in _OUTCOMES:
            if count := counts.get(outcome, 0):
                base -= height * count / most
                title = f"{count} runs {outcome}, started {_span(index * axis.step)}"
                size = height * count / most
                x = axis.x(index * axis.step)
                svg.rect(x, base, axis.width(), size, fill=_COLORS[outcome], title=title)
    svg.y += height + 10


def _timeline(found: _Digest) -> str:
    axis = _Axis(found.end, _step(found.end, _MAX_BINS))
    svg = _Svg("timeline", "timeline in virtual time")
    for name, times in found.faults.items():
        _marks(svg, axis, times, fill="#d32f2f", what=f"fault {name}")
    (_lanes if len(found.spans) <= _MAX_LANES else _histogram)(svg, axis, found)
    for name, changes in found.breakers.items():
        svg.text(_LEFT - 8, svg.y + 11, f"breaker {name}")
        state, since = changes[0][1], 0.0
        for at, _, new in [*changes, (found.end, "", "")]:
            x, title = axis.x(since), f"{name} {state} from {_span(since)} to {_span(at)}"
            fill = _BREAKER_COLORS.get(state, "#9e9e9e")
            svg.rect(x, svg.y, max(axis.x(at) - x, 2.0), 14, fill=fill, title=title)
            state, since = new, at
        svg.y += 22
    if found.letters:
        times = [letter.at for letter in found.letters]
        _marks(svg, axis, times, fill=_COLORS["dlq"], what="dead letters")
    bottom, tick = svg.y, _step(found.end, 10)
    svg.line(_LEFT, _W - _RIGHT, bottom, bottom, stroke="#607d8b")
    for i in range(int(found.end // tick) + 1):
        x = axis.x(i * tick)
        svg.parts.insert(
            0, f'<line x1="{_n(x)}" x2="{_n(x)}" y1="0" y2="{_n(bottom)}" stroke="#eceff1"/>'
        )
        svg.text(x, bottom + 14, _span(i * tick), anchor="middle")
    return svg.render(bottom + 22)


# --------------------------------------------------------------------------- the retry chart


def _policy(kind: str, overrides: Mapping[FailureType, RetryPolicy]) -> tuple[RetryPolicy, str]:
    member = FailureType(kind)
    if member in overrides:
        return overrides[member], "scenario"
    return default_policy(member), "default"


def _describe(policy: RetryPolicy, origin: str) -> str:
    return (
        f"{policy.strategy.value} from {_span(policy.initial_delay)} x{policy.factor:g}, "
        f"cap {_span(policy.max_delay)}, {policy.max_retries} retries, "
        f"jitter {policy.jitter.value} ({origin})"
    )


@dataclass(frozen=True, slots=True)
class _LogScale:
    low: float
    high: float
    top: float = 12.0
    height: float = 240.0

    def y(self, value: float) -> float:
        span = math.log10(self.high) - math.log10(self.low)
        return self.top + (math.log10(self.high) - math.log10(max(value, self.low))) / span * (
            self.height
        )


_TICKS: Final = (0.1, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400)


def _retry_chart(found: _Digest, overrides: Mapping[FailureType, RetryPolicy]) -> str:
    by_type: dict[str, list[_Retry]] = defaultdict(list)
    for retry in found.retries:
        by_type[retry.failure_type].append(retry)
    envelopes: dict[str, list[tuple[float, float]]] = {}
    rows: list[list[str]] = []
    for kind, retries in sorted(by_type.items()):
        observed = max(retry.number for retry in retries)
        try:
            policy, origin = _policy(kind, overrides)
        except ValueError:  # not a failure type: no policy to draw
            envelopes[kind] = []
            rows.append([_esc(kind), "no policy known", str(len(retries)), "-", ""])
            continue
        envelope = [policy.envelope(n) for n in range(1, max(observed, policy.max_retries) + 1)]
        envelopes[kind] = envelope
        outside = [
            r
            for r in retries
            if not envelope[r.number - 1][0] - 1e-6 <= r.delay <= envelope[r.number - 1][1] + 1e-6
        ]
        why = ""
        if outside:
            first = outside[0]
            why = f"{_span(first.delay)}; decided: <code>{_esc(first.reason)}</code>"
        described = _esc(_describe(policy, origin))
        rows.append([_esc(kind), described, str(len(retries)), str(len(outside)), why])
    numbers = max([*map(len, envelopes.values()), *(r.number for r in found.retries)])
    values = [r.delay for r in found.retries]
    values += [value for envelope in envelopes.values() for pair in envelope for value in pair]
    low = 10 ** math.floor(math.log10(max(min((v for v in values if v > 0), default=1.0), 0.1)))
    scale = _LogScale(low, 10 ** math.ceil(math.log10(max(*values, low * 10))))
    left, bottom = 70.0, scale.top + scale.height
    slot = (_W - left - _RIGHT) / numbers
    svg = _Svg("retry-chart", "retry delays against the policy envelope")
    mid = scale.top + scale.height / 2
    rotate = f' transform="rotate(-90 14 {_n(mid)})"'
    svg.text(14, mid, "countdown (log scale)", anchor="middle", extra=rotate)
    last = math.inf
    for tick in _TICKS:
        # Labels closer than 14 px overlap: keep the first of each crowded pair.
        if scale.low <= tick <= scale.high and last - scale.y(tick) >= 14:
            last = scale.y(tick)
            svg.line(left, _W - _RIGHT, last, last, stroke="#eceff1")
            svg.text(left - 6, last + 4, _span(tick))
    for n in range(1, numbers + 1):
        svg.text(left + (n - 0.5) * slot, bottom + 16, str(n), anchor="middle")
    svg.text(left + (_W - left - _RIGHT) / 2, bottom + 34, "retry number", anchor="middle")
    colors = {kind: _TYPE_COLORS[i % len(_TYPE_COLORS)] for i, kind in enumerate(sorted(by_type))}
    for kind, envelope in envelopes.items():
        for n, (lo, hi) in enumerate(envelope, start=1):
            title = f"{kind} policy envelope for retry {n}: {_span(lo)}-{_span(hi)}"
            svg.parts.append(
                f'<rect x="{_n(left + (n - 0.85) * slot)}" y="{_n(scale.y(hi))}" '
                f'width="{_n(slot * 0.7)}" height="{max(scale.y(lo) - scale.y(hi), 1.5):.1f}" '
                f'fill="{colors[kind]}" fill-opacity="0.15" stroke="{colors[kind]}" '
                f'stroke-dasharray="4 2"><title>{_esc(title)}</title></rect>'
            )
    for kind, retries in sorted(by_type.items()):
        stride = math.ceil(len(retries) / _MAX_POINTS)
        for i, retry in enumerate(retries[::stride]):
            x = left + (retry.number - 0.5 + ((i * 0.618034) % 1 - 0.5) * 0.5) * slot
            title = f"{kind} retry {retry.number}: {_span(retry.delay)}; decided: {retry.reason}"
            svg.dot(x, scale.y(retry.delay), fill=colors[kind], title=title, r=2.6)
        if stride > 1:
            rows.append([_esc(kind), f"every {stride}th retry plotted", "", "", ""])
    headers = ["failure type", "effective policy (dashed boxes: its envelope)", "retries",
               "outside the envelope", "the first one outside"]  # fmt: skip
    legend = _legend((colors[kind], kind) for kind in sorted(by_type))
    return svg.render(bottom + 48) + legend + _table(headers, rows, "policies")


# --------------------------------------------------------------------------- tables


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{_esc(name)} &times;{count}" for name, count in counter.most_common())


def _dead_letters(letters: Sequence[_Letter]) -> str:
    if not letters:
        return '<p class="empty-dlq">Nothing was dead-lettered.</p>'
    groups: dict[str, list[_Letter]] = defaultdict(list)
    for letter in letters:
        groups[letter.failure_type].append(letter)
    summary = _table(
        ["failure type", "entries", "exceptions", "tasks", "first", "last", "example message"],
        (
            [
                _esc(kind),
                str(len(group)),
                _counts(Counter(letter.exception for letter in group)),
                _counts(Counter(letter.task_name for letter in group)),
                _span(group[0].at),
                _span(group[-1].at),
                f"<code>{_esc(group[0].message)}</code>",
            ]
            for kind, group in sorted(groups.items())
        ),
        "dlq",
    )
    rows = [
        [_span(x.at), _esc(x.task_name), f"<code>{_esc(x.task_id)}</code>", str(x.attempt),
         _esc(x.failure_type), _esc(x.exception), f"<code>{_esc(x.message)}</code>"]
        for group in groups.values()
        for x in group[:_MAX_DLQ_ROWS]
    ]  # fmt: skip
    entries = _table(
        ["at", "task", "task id", "attempt", "failure type", "exception", "message"], rows
    )
    return (
        f"{summary}<details><summary>entries (the first {_MAX_DLQ_ROWS} of each type)"
        f"</summary>{entries}</details>"
    )


def _json(value: object) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False, sort_keys=True)


def _section(result: ScenarioResult, anchor: str) -> str:
    scenario, m = result.scenario, result.measures
    found = _digest(result.history, float(m.get("virtual_duration", 0.0)))
    verdict = "pass" if result.passed else "fail"
    head = (
        f'<summary><h2 class="scenario-title">{_esc(scenario.name)}</h2>'
        f'<span class="verdict {verdict}">{verdict.upper()}</span></summary>'
    )
    meta = (
        f'<p class="meta">{_esc(scenario.description)}<br>{_esc(scenario.location)} &middot; '
        f"seed {result.seed} &middot; fingerprint <code>{_esc(result.fingerprint[:16])}</code>"
        f" &middot; {len(result.history)} events, {_span(found.end)} virtual<br>"
        f"{m.get('tasks', len(found.spans))} tasks, {len(found.runs)} runs, "
        f"{len(found.retries)} retries, {found.deferred} deferred, "
        f"{len(found.letters)} dead-lettered, {sum(map(len, found.faults.values()))} faults fired,"
        f" {m.get('duplicate_side_effects', 0)} duplicate side effects</p>"
    )
    failures = ""
    if result.failures:
        items = "".join(
            f"<li><b>{_esc(f.name)}</b>: expected {_esc(f.expected)}, "
            f"measured {_esc(f.measured)}</li>"
            for f in result.failures
        )
        rerun = f"taskchaos run {scenario.source} --seed {result.seed}"
        failures = (
            f'<div class="failures"><b>Failed expectations</b><ul>{items}</ul>'
            f"re-run: <code>{_esc(rerun)}</code></div>"
        )
    checked = "".join(
        f"<tr{'' if e.passed else _BAD}><td>{_esc(e.name)}</td><td>{_esc(e.expected)}"
        f"</td><td>{_esc(e.measured)}</td><td>{'ok' if e.passed else '<b>FAIL</b>'}</td></tr>"
        for e in result.expectations
    )
    expectations = (
        '<table class="expectations"><thead><tr><th>expectation</th><th>expected</th>'
        f"<th>measured</th><th>verdict</th></tr></thead><tbody>{checked}</tbody></table>"
    )
    present = {run.outcome for run in found.runs}
    legend = [(_COLORS[o], f"run {o}") for o in _OUTCOMES if o in present]
    if found.breakers:
        legend += [(color, f"breaker {state}") for state, color in _BREAKER_COLORS.items()]
    retries = (
        _retry_chart(found, scenario.policies)
        if found.retries
        else '<p class="no-retries">No retries after a failure.</p>'
    )
    deferred = (
        f'<p class="meta">{found.deferred} deferrals (an open breaker or a busy idempotency '
        "key) are not retries of a failure and are not plotted.</p>"
        if found.deferred
        else ""
    )
    tasks = _table(
        ["task", "args", "kwargs", "weight", "queue"],
        (
            [_esc(c.name), f"<code>{_esc(_json(list(c.args)))}</code>",
             f"<code>{_esc(_json(dict(c.kwargs)))}</code>", f"{c.weight:g}", _esc(c.queue or "-")]
            for c in scenario.tasks
        ),
    )  # fmt: skip
    faults = _table(
        ["injection", "calls reaching it", "fired"],
        (
            [_esc(f.get("label")), str(f.get("calls")), str(f.get("fired"))]
            for f in m.get("faults", [])
        ),
    )
    return (
        f'<details class="scenario" id="{anchor}" data-verdict="{verdict}" open>{head}{meta}'
        f"{failures}<h3>Expectations</h3>{expectations}<h3>Timeline (virtual time)</h3>"
        f"{_timeline(found)}{_legend(legend)}<h3>Faults</h3>{faults}"
        f"<h3>Retry delays against the policy envelope</h3>{retries}{deferred}"
        f"<h3>Dead-letter queue by failure type</h3>{_dead_letters(found.letters)}"
        f"<h3>Workload</h3>{tasks}</details>"
    )


def _overview(results: Sequence[ScenarioResult], anchors: Sequence[str]) -> str:
    rows = []
    for result, anchor in zip(results, anchors, strict=True):
        m: Mapping[str, Any] = result.measures
        failures = result.failures
        verdict = "pass" if result.passed else "fail"
        rows.append([
            f'<a href="#{anchor}">{_esc(result.scenario.name)}</a>',
            f'<span class="verdict {verdict}">{verdict.upper()}</span>',
            _esc(m.get("tasks", "-")),
            _esc(m.get("retries", "-")),
            _esc(m.get("dlq_total", "-")),
            _esc(sum(b.get("trips", 0) for b in m.get("breakers", {}).values())),
            _span(float(m.get("virtual_duration", 0.0))),
            _esc(failures[0].describe()) if failures else "",
        ])  # fmt: skip
    headers = [
        "scenario",
        "verdict",
        "tasks",
        "retries",
        "dlq",
        "trips",
        "virtual",
        "first failure",
    ]
    return _table(headers, rows, "overview")


def render_html(results: Sequence[ScenarioResult], *, title: str = "taskchaos report") -> str:
    """Render scenario results as one self-contained HTML page.

    Args:
        results: the results of ``run_scenario``, in the order to show them.
        title: the page's title and heading.

    Returns:
        The page, a complete HTML document with no external resources.
    """
    anchors: list[str] = []
    for index, result in enumerate(results):
        anchors.append(f"s{index}-" + re.sub(r"[^A-Za-z0-9_-]", "-", result.scenario.name))
    failed = sum(not result.passed for result in results)
    sections = "".join(
        _section(result, anchor) for result, anchor in zip(results, anchors, strict=True)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_esc(title)}</h1><p class="meta">{len(results)} scenarios: '
        f"{len(results) - failed} passed, {failed} failed</p>"
        '<p><button type="button" data-open="1">expand all</button>'
        '<button type="button" data-open="0">collapse all</button></p>'
        f"{_overview(results, anchors)}{sections}<script>{_SCRIPT}</script></body></html>\n"
    )
