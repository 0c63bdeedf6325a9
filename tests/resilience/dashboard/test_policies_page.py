"""The policies page: effective policy per type, success rates, adaptations, budget use."""

from __future__ import annotations

import html as htmllib
import re
from typing import TYPE_CHECKING, Any

import pytest

from resilience import (
    FailureType,
    OutcomeHistory,
    RetryBudget,
    RetryEngine,
    RetryPolicy,
    default_policy,
)

from .conftest import OPERATOR, T0, XSS, Populated, login

if TYPE_CHECKING:
    from collections.abc import Iterator

NET = FailureType.TRANSIENT_NETWORK


def _row(html: str, task: str, kind: FailureType) -> list[str]:
    """The text of each cell of the tasks table's row for (task, type)."""
    found = re.search(
        rf'<tr data-task="{re.escape(task)}" data-type="{kind.value}">(.*?)</tr>', html, re.S
    )
    assert found, f"no row for {task} / {kind.value}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    return [htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def _outcomes(populated: Populated, task: str, *, successes: int, failures: int) -> None:
    history = OutcomeHistory(populated.store.outcomes, clock=populated.clock)
    for n in range(successes + failures):
        history.record(task, NET, success=n < successes, now=T0 - 60)


@pytest.fixture
def celery_app(populated: Populated) -> Iterator[Any]:
    """A Celery app on the memory broker; install it in the test with its own options."""
    from celery import Celery

    app = Celery("policies_page", broker="memory://", set_as_current=False)
    yield app
    app.close()


def test_without_a_celery_app_the_defaults_are_shown_and_said_to_be(app_factory: Any) -> None:
    """No Celery app: the page says it shows defaults; one delay curve per retried type."""
    html = login(app_factory(), OPERATOR).get("/policies/").text
    assert "The library's default policy per failure type" in html
    assert "cannot see the app's own policies" in html
    retried = [t for t in FailureType if default_policy(t).max_retries]
    assert html.count("<svg") == len(retried)
    assert "(configured)" not in html
    assert "No retry budget is configured" in html


def test_tasks_show_success_rates_and_no_adjustment_on_thin_history(app_factory: Any) -> None:
    """send_email's 1 of 3 retries succeeded: 33 %, too few outcomes for any adjustment."""
    html = login(app_factory(), OPERATOR).get("/policies/").text
    cells = _row(html, "send_email", NET)
    policy = default_policy(NET)
    assert cells[2:6] == ["1", "2", "33%", "none"]
    assert cells[6].startswith(f"{policy.max_retries} retries, exponential from ")


@pytest.mark.parametrize(
    ("successes", "failures", "words", "retries_delta"),
    [
        (11, 1, "delays x0.7 as 92% of 12 past retries succeeded", 0),
        (1, 11, "delays x1.5 and one retry fewer as only 8% of 12 past retries succeeded", -1),
    ],
)
def test_adjustments_in_force_are_the_engines_own(
    app_factory: Any,
    populated: Populated,
    successes: int,
    failures: int,
    words: str,
    retries_delta: int,
) -> None:
    """With enough history the page shows the engine's adjustment, and the engine applies it."""
    _outcomes(populated, "sync", successes=successes, failures=failures)
    html = login(app_factory(), OPERATOR).get("/policies/").text
    cells = _row(html, "sync", NET)
    assert cells[5] == words
    engine = RetryEngine(store=populated.store, clock=populated.clock, peak_hours=None)
    applied = engine.decide("sync", ConnectionRefusedError(111, "refused"), 1).policy
    base = default_policy(NET)
    assert applied.max_retries == base.max_retries + retries_delta
    assert cells[6].startswith(
        f"{applied.max_retries} retries, exponential from {applied.initial_delay:g} s"
    )


def test_a_celery_apps_policies_are_merged_over_the_defaults(
    app_factory: Any, populated: Populated, celery_app: Any
) -> None:
    """A type the app configures is marked and drawn from its policy; others stay default."""
    from resilience.celery import install

    own = RetryPolicy(
        max_retries=2, initial_delay=7, strategy="constant", max_delay=7, jitter="none"
    )
    install(celery_app, store=populated.store, clock=populated.clock, policies={NET: own})
    html = login(app_factory(celery_app=celery_app, with_replay=False), OPERATOR).get("/policies/")
    page = html.text
    assert "Policies of the Celery app's retry engine" in page
    section = page.split('<section id="TRANSIENT_NETWORK">')[1].split("</section>")[0]
    assert "(configured)" in section
    assert "2 retries, constant from 7 s, capped at 7 s, jitter none." in section
    assert ">#2</text>" in section
    assert ">#3</text>" not in section
    database = page.split('<section id="TRANSIENT_DATABASE">')[1].split("</section>")[0]
    assert "(configured)" not in database
    assert (
        _row(page, "send_email", NET)[6]
        == "2 retries, constant from 7 s, capped at 7 s, jitter none"
    )


def test_budget_use_is_shown_when_the_engine_has_a_budget(
    app_factory: Any, populated: Populated, celery_app: Any
) -> None:
    """An engine with a budget: its rule and each task's first attempts, grants and remainder."""
    from resilience.celery import install

    budget = RetryBudget(ratio=0.5, window=60, min_retries=1, clock=populated.clock)
    engine = RetryEngine(store=populated.store, budget=budget, clock=populated.clock)
    install(celery_app, engine=engine, store=populated.store, clock=populated.clock)
    for _ in range(4):
        budget.record_first_attempt("send_email")
    assert budget.try_acquire("send_email")
    page = login(app_factory(celery_app=celery_app, with_replay=False), OPERATOR)
    html = page.get("/policies/").text
    assert "Each task may retry 1 times plus 0.5 per first attempt\nin any 60 s." in html
    row = html.split('<table id="budget-use">')[1].split('<tr data-task="send_email">')[1]
    assert row.startswith("<td>send_email</td><td>4</td><td>1</td><td>3</td><td>2</td></tr>")


def test_task_names_are_escaped(app_factory: Any, populated: Populated) -> None:
    """A task name holding <script> is shown as text on the policies page."""
    _outcomes(populated, XSS, successes=1, failures=0)
    html = login(app_factory(), OPERATOR).get("/policies/").text
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
