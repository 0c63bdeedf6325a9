"""The taxonomy against a labelled corpus of real exceptions from real libraries."""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from resilience.taxonomy import PROFILES, Classifier, FailureType, classify

_CORPUS_DIR = Path(__file__).parent / "corpus"
_MIN_ACCURACY = 0.95


def _corpus_module() -> Any:
    if str(_CORPUS_DIR) not in sys.path:
        sys.path.insert(0, str(_CORPUS_DIR))
    return importlib.import_module("taxonomy_corpus")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The labelled corpus, built once per module against local resources."""
    module = _corpus_module()
    with module.corpus_environment(str(tmp_path_factory.mktemp("corpus"))) as env:
        cases: list[Any] = module.build_corpus(env)
    return cases


def test_corpus_is_large_real_and_hard(corpus: list[Any]) -> None:
    """The corpus holds >= 150 cases, most live or from real library classes, with traps."""
    assert len(corpus) >= 150
    assert sum(case.live for case in corpus) >= 100
    assert sum(case.hard for case in corpus) >= 40
    modules = {type(case.exc).__module__.split(".")[0] for case in corpus}
    for library in (
        "requests",
        "urllib3",
        "httpx",
        "aiohttp",
        "redis",
        "psycopg",
        "psycopg2",
        "sqlalchemy",
        "django",
        "botocore",
        "celery",
        "billiard",
        "kombu",
        "pydantic_core",
        "sqlite3",
        "socket",
        "json",
        "tenacity",
    ):
        assert library in modules, library


def test_corpus_accuracy(corpus: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    """At least 95 % of the corpus gets its expected type; the figure and misses are printed."""
    misses = []
    for case in corpus:
        result = classify(case.exc)
        if result.failure_type is not case.expected:
            misses.append(
                f"  {case.label}: expected {case.expected}, got "
                f"{result.failure_type} ({result.evidence})"
            )
    right = len(corpus) - len(misses)
    accuracy = right / len(corpus)
    with capsys.disabled():
        print(f"\ntaxonomy corpus accuracy: {accuracy:.1%} ({right}/{len(corpus)})")
        for miss in misses:
            print(miss)
    assert accuracy >= _MIN_ACCURACY, "\n".join(misses)


def test_hard_cases_accuracy(corpus: list[Any]) -> None:
    """The traps alone (wording, wrapping, near-miss numbers) still score >= 90 %."""
    hard = [case for case in corpus if case.hard]
    right = sum(classify(case.exc).failure_type is case.expected for case in hard)
    assert right / len(hard) >= 0.9


def test_every_type_is_produced_by_the_corpus(corpus: list[Any]) -> None:
    """Each of the 18 types is both expected of and produced for some corpus entry."""
    produced = Counter(classify(case.exc).failure_type for case in corpus)
    expected = Counter(case.expected for case in corpus)
    for failure_type in FailureType:
        assert failure_type in PROFILES
        assert produced[failure_type] >= 1, f"{failure_type} never produced"
        assert expected[failure_type] >= 1, f"{failure_type} never expected"


def test_retry_after_matches_what_the_server_said(corpus: list[Any]) -> None:
    """Cases carrying Retry-After (header, attribute, Celery's when) report it exactly."""
    with_wait = [case for case in corpus if case.retry_after is not None]
    assert len(with_wait) >= 8
    for case in with_wait:
        result = classify(case.exc)
        assert result.retry_after == pytest.approx(case.retry_after), case.label
        if result.retry_recommended:
            assert result.retry_delay_seconds == pytest.approx(case.retry_after), case.label


def test_http_date_retry_after_is_converted_to_seconds(corpus: list[Any]) -> None:
    """An HTTP-date Retry-After (90 s ahead, second resolution) becomes about 90 seconds."""
    case = next(c for c in corpus if c.label == "httpx 429 Retry-After HTTP-date")
    result = classify(case.exc)
    assert result.retry_after is not None
    assert 80 <= result.retry_after <= 91


def test_garbage_retry_after_is_none(corpus: list[Any]) -> None:
    """A non-numeric Retry-After header gives retry_after None and the type's default delay."""
    case = next(c for c in corpus if c.label.endswith("429?retry_after=garbage"))
    result = classify(case.exc)
    assert result.retry_after is None
    assert (
        result.retry_delay_seconds == PROFILES[FailureType.TRANSIENT_RATE_LIMIT].retry_delay_seconds
    )


def test_evidence_names_the_rule_kind(corpus: list[Any]) -> None:
    """Every classification's evidence names which kind of rule decided."""
    kinds = (
        "exception class",
        "errno",
        "SQLSTATE",
        "HTTP status",
        "provider error code",
        "message pattern",
        "class-name words",
        "via ",
        "DNS error",
        "TLS reason",
        "SQLite code",
        "no rule matched",
        "exception group",
        "pydantic settings",
        "KeyError key",
    )
    seen = Counter()
    for case in corpus:
        evidence = classify(case.exc).evidence
        matched = [kind for kind in kinds if kind in evidence]
        assert matched, f"{case.label}: {evidence}"
        seen.update(matched)
    for kind in (
        "exception class",
        "errno",
        "SQLSTATE",
        "HTTP status",
        "provider error code",
        "message pattern",
        "class-name words",
        "via ",
    ):
        assert seen[kind] >= 1, kind


def test_class_decided_cases_need_no_message(corpus: list[Any]) -> None:
    """Cases marked 'by class' are decided by their class, errno or status, not by text."""
    for case in corpus:
        if case.by_class:
            evidence = classify(case.exc).evidence
            assert "message pattern" not in evidence, case.label
            assert "message text" not in evidence, case.label


def test_isolated_classifier_agrees_with_default(corpus: list[Any]) -> None:
    """A fresh Classifier without user rules gives the default classifier's answers."""
    fresh = Classifier()
    for case in corpus:
        mine, default = fresh.classify(case.exc), classify(case.exc)
        assert (mine.failure_type, mine.confidence, mine.retry_recommended) == (
            default.failure_type,
            default.confidence,
            default.retry_recommended,
        ), case.label
