"""Proof against real Celery workers: prefork processes, a Redis broker and result backend.

Two worker processes (``--pool=prefork --concurrency=2`` each) consume a shared
queue and one private queue each, so a test can send a message to a chosen worker.
Broker, results, resilience store and the tasks' journal share the Redis of
``RESILIENCE_TEST_REDIS_URL`` under one key prefix per run, removed afterwards.
Task bodies record what they did, with their host name and process id, in
``real_worker_app.Journal``; the tests read it and the store.

Without that variable the module is skipped, unless ``RESILIENCE_REQUIRE_SERVERS=1``
(CI), which turns a missing or unreachable Redis into a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from resilience import CircuitState, DeadLetterRecord, DeadLetterStatus, FailureType
from resilience.celery import Resilience, runtime_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

APP_DIR = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 60.0
CASE_TIMEOUT = 30.0
# A retry's countdown starts after the failed attempt and ends with a delivery
# through Redis and the worker's timer: the gap between attempts exceeds the
# countdown by that latency, which a loaded 2-core machine stretches.
LATENCY_SLACK = 0.75
EARLY_SLACK = 0.05


def _load_app_module() -> ModuleType:
    # The worker imports the module as ``real_worker_app`` from PYTHONPATH; the test
    # process loads the same file under a private name (tests are not a package).
    spec = importlib.util.spec_from_file_location(
        "_proof_real_worker_app", APP_DIR / "real_worker_app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


proof = _load_app_module()


def _servers_required() -> bool:
    return os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1"


def _redis_url() -> str:
    """The test Redis URL, or skip (fail when servers are required)."""
    url = os.environ.get("RESILIENCE_TEST_REDIS_URL")
    message = "RESILIENCE_TEST_REDIS_URL is not set: start the servers with scripts/servers.sh"
    if not url:
        if _servers_required():
            pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
        pytest.skip(message)
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unreachable = f"Redis at RESILIENCE_TEST_REDIS_URL is unreachable: {exc}"
        if _servers_required():
            pytest.fail(unreachable)
        pytest.skip(unreachable)
    return url


@dataclass
class Workers:
    """The running workers and the test process's view of the shared state."""

    app: Any
    runtime: Resilience
    journal: Any
    queue: str
    hosts: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def task(self, name: str) -> Any:
        """The registered task ``name`` of the proof app."""
        return self.app.tasks[name]

    def queue_of(self, worker: str) -> str:
        """The private queue of ``worker`` (``"a"`` or ``"b"``)."""
        return f"{self.queue}.{worker}"

    def diagnostics(self) -> str:
        """The end of every worker's log."""
        parts = []
        for name, path in self.logs.items():
            lines = path.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"--- worker {name} ({path}) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def check_alive(self) -> None:
        """Fail the test with the logs if a worker process exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"worker {name} exited with {process.returncode}\n{self.diagnostics()}")

    def wait_for(self, condition: Callable[[], Any], *, what: str) -> Any:
        """Poll ``condition`` until it returns something truthy, and return it."""
        deadline = time.monotonic() + CASE_TIMEOUT
        while True:
            value = condition()
            if value:
                return value
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"waited {CASE_TIMEOUT:g}s for {what}\n{self.diagnostics()}")
            # The state lives in other processes; a short poll is the only way to
            # see it change (no fixed wait decides anything here).
            time.sleep(0.02)

    def result(self, async_result: Any, *, state: str) -> Any:
        """Wait until the task reaches ``state``; return its result (or exception)."""
        self.wait_for(lambda: async_result.state == state, what=f"{async_result.id} {state}")
        return async_result.get(propagate=False, timeout=CASE_TIMEOUT)

    def dead_letter_of(self, task_name: str, task_id: str) -> DeadLetterRecord:
        """The one dead letter of the run ``task_id``."""
        found = [
            record
            for record in self.runtime.dead_letters.list(task_name=task_name, limit=1000).records
            if record.task_id == task_id
        ]
        assert len(found) == 1, found
        return found[0]

    def dead_letters_of(self, task_name: str) -> list[DeadLetterRecord]:
        """Every dead letter of ``task_name``."""
        return list(self.runtime.dead_letters.list(task_name=task_name, limit=1000).records)


def _start_worker(
    name: str, *, queues: str, host: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "real_worker_app",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        queues,
        "-n",
        host,
        "--loglevel=INFO",
    ]
    with log.open("wb") as sink:
        # Its own session: stopping it reaches its pool children too.
        return subprocess.Popen(
            command,
            cwd=log.parent,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    # Every worker starts its warm shutdown at once, then each gets the time left.
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10.0
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        # Pool children that outlived their parent (the session is the worker's).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two real prefork workers on a Redis broker, isolated by a key prefix per run."""
    url = _redis_url()
    run = uuid.uuid4().hex[:12]
    prefix = f"taskchaos-proof:{run}:"
    queue = f"proof-{run}"
    directory = tmp_path_factory.mktemp("real-worker")
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                [str(APP_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "TASKCHAOS_PROOF_REDIS_URL": url,
            "TASKCHAOS_PROOF_PREFIX": prefix,
            "TASKCHAOS_PROOF_QUEUE": queue,
            "TASKCHAOS_PROOF_DIR": str(directory),
        }
    )
    app = proof.make_app(redis_url=url, prefix=prefix, queue=queue, marker_dir=str(directory))
    hosts = {name: f"{name}-{run}@proof" for name in ("a", "b")}
    logs = {name: directory / f"worker-{name}.log" for name in hosts}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, host in hosts.items():
            processes[name] = _start_worker(
                name, queues=f"{queue},{queue}.{name}", host=host, env=env, log=logs[name]
            )
        found = Workers(
            app=app,
            runtime=runtime_for(app),
            journal=app.proof_journal,
            queue=queue,
            hosts=hosts,
            processes=processes,
            logs=logs,
        )
        # Ready means consuming: a probe task through each private queue comes back.
        pings = [app.tasks["proof.ping"].apply_async(queue=found.queue_of(name)) for name in hosts]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for ping in pings:
            while not ping.ready():
                found.check_alive()
                if time.monotonic() > deadline:
                    pytest.fail(f"workers not ready in {STARTUP_TIMEOUT:g}s\n{found.diagnostics()}")
                time.sleep(0.05)
        yield found
    finally:
        _stop(list(processes.values()))
        client = app.proof_journal.client
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        app.close()


def _run_id() -> str:
    return uuid.uuid4().hex[:10]


def test_deadlock_is_retried_exactly_twice_with_the_policy_countdowns(workers: Workers) -> None:
    """A task failing twice with SQLSTATE 40P01 is retried twice, after 0.3 s then 0.6 s."""
    run = _run_id()
    result = workers.task("proof.deadlock").apply_async((run,))
    assert workers.result(result, state="SUCCESS") == "committed"

    attempts = workers.journal.read(run)
    assert [attempt["retries"] for attempt in attempts] == [0, 1, 2]
    countdowns = [proof.DEADLOCK_POLICY.delay(n) for n in (1, 2)]
    assert countdowns == [0.3, 0.6]
    retries = workers.journal.read(f"retries:{result.id}")
    assert [entry["cause"] for entry in retries] == ["DeadlockDetected"] * 2
    assert [entry["countdown"] for entry in retries] == pytest.approx(countdowns)
    gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(attempts)]
    for gap, countdown in zip(gaps, countdowns, strict=True):
        assert countdown - EARLY_SLACK <= gap <= countdown + LATENCY_SLACK, (gaps, countdowns)
    assert workers.dead_letters_of("proof.deadlock") == []


def test_validation_failure_is_dead_lettered_without_retry(workers: Workers) -> None:
    """A ValueError runs once and lands in the DLQ as PERMANENT_VALIDATION with its traceback."""
    run = _run_id()
    result = workers.task("proof.validate").apply_async((run, {"amount": "n/a"}))
    error = workers.result(result, state="FAILURE")
    assert isinstance(error, ValueError)

    assert len(workers.journal.read(run)) == 1
    assert workers.journal.read(f"retries:{result.id}") == []
    record = workers.dead_letter_of("proof.validate", result.id)
    assert record.failure_type is FailureType.PERMANENT_VALIDATION
    assert record.retry_count == 0
    assert record.args == [run, {"amount": "n/a"}]
    assert record.queue == workers.queue
    assert record.exception_class.endswith("ValueError")
    assert "Traceback (most recent call last)" in record.traceback
    assert "in validate" in record.traceback
    assert "column 'amount' is not a number" in record.traceback
    assert record.status is DeadLetterStatus.PENDING


def test_exhausted_retries_are_dead_lettered(workers: Workers) -> None:
    """A network error on every attempt is retried twice (0.2 s, 0.4 s) then dead-lettered."""
    run = _run_id()
    result = workers.task("proof.flaky_network").apply_async((run,))
    assert isinstance(workers.result(result, state="FAILURE"), ConnectionError)

    assert [attempt["retries"] for attempt in workers.journal.read(run)] == [0, 1, 2]
    retries = workers.journal.read(f"retries:{result.id}")
    countdowns = [proof.NETWORK_POLICY.delay(n) for n in (1, 2)]
    assert countdowns == [0.2, 0.4]
    assert [entry["countdown"] for entry in retries] == pytest.approx(countdowns)
    assert [entry["cause"] for entry in retries] == ["ConnectionError"] * 2
    record = workers.dead_letter_of("proof.flaky_network", result.id)
    assert record.failure_type is FailureType.TRANSIENT_NETWORK
    assert record.retry_count == 2
    assert record.first_failed_at < record.last_failed_at


def test_sigkilled_run_is_redelivered_and_its_side_effect_happens_once(workers: Workers) -> None:
    """A pool child SIGKILLed after its side effect: redelivered, one effect, then SUCCESS."""
    run = _run_id()
    result = workers.task("proof.kill_after_effect").apply_async((run,))
    assert workers.result(result, state="SUCCESS") == "done"

    bodies = workers.journal.read(run)
    assert len(bodies) == 2, bodies
    killed, finished = bodies
    assert killed["pid"] != finished["pid"]
    assert killed["key"] == finished["key"] == f"effect:{run}"
    # The redelivery took the key over once the dead run's lease ran out.
    assert finished["token"] > killed["token"]
    assert finished["at"] - killed["at"] >= proof.KILL_LEASE - EARLY_SLACK
    assert len(workers.journal.read(f"{run}:effects")) == 1
    # Redelivered, not lost: nothing was dead-lettered as a worker crash.
    assert workers.dead_letters_of("proof.kill_after_effect") == []


def test_breaker_opened_in_one_worker_blocks_the_dependency_in_another(
    workers: Workers,
) -> None:
    """Failures in worker a open the shared breaker; worker b defers its call until the probe."""
    run = _run_id()
    breaker = workers.runtime.breaker(proof.DEPENDENCY)
    task = workers.task("proof.call_dependency")
    failing = [
        task.apply_async((run,), {"fail": True}, queue=workers.queue_of("a"))
        for _ in range(proof.BREAKER_THRESHOLD)
    ]
    for result in failing:
        assert isinstance(workers.result(result, state="FAILURE"), ConnectionError)
    opened = breaker.state
    assert opened is CircuitState.OPEN

    probe = task.apply_async((run,), {"fail": False}, queue=workers.queue_of("b"))
    assert workers.result(probe, state="SUCCESS") == "posted"

    bodies = workers.journal.read(run)
    failed_in = {(body["host"], body["pid"]) for body in bodies if body["fail"]}
    assert {host for host, _ in failed_in} == {workers.hosts["a"]}
    (deferral,) = workers.journal.read(f"retries:{probe.id}")
    assert deferral["cause"] == "CircuitOpenError"
    assert deferral["host"] == workers.hosts["b"]
    assert (deferral["host"], deferral["pid"]) not in failed_in
    # Until the probe, plus the spread that keeps held-back tasks from returning together.
    assert 0 < deferral["countdown"] <= proof.BREAKER_RESET * 1.5
    # The deferred call ran once, as the probe, in worker b, and closed the breaker.
    (ran,) = [body for body in bodies if not body["fail"]]
    assert ran["host"] == workers.hosts["b"]
    closed = breaker.state
    assert closed is CircuitState.CLOSED
    # Waiting for the breaker is not a failure: only the two real failures are dead letters.
    assert len(workers.dead_letters_of("proof.call_dependency")) == proof.BREAKER_THRESHOLD


def test_dead_letter_replay_runs_on_the_worker_and_resolves_the_record(workers: Workers) -> None:
    """Replaying a dead letter re-runs the task on a worker; its success RESOLVES the record."""
    run = _run_id()
    result = workers.task("proof.render_report").apply_async((run,))
    assert isinstance(workers.result(result, state="FAILURE"), KeyError)
    record = workers.dead_letter_of("proof.render_report", result.id)
    assert record.failure_type is FailureType.PERMANENT_LOGIC

    workers.journal.client.set(workers.journal.key(f"fixed:{run}"), 1)  # deploy the fix
    retrying = workers.runtime.dead_letters.retry(record.id, actor="proof")
    assert retrying.status is DeadLetterStatus.RETRYING
    replay_id = retrying.history[-1].task_id
    assert replay_id is not None
    assert replay_id != result.id

    resolved = workers.wait_for(
        lambda: (
            (found := workers.runtime.dead_letters.get(record.id)) is not None
            and found.status is DeadLetterStatus.RESOLVED
            and found
        ),
        what=f"dead letter {record.id} RESOLVED",
    )
    assert resolved.history[-1].actor == "worker"
    replayed = workers.app.AsyncResult(replay_id)
    assert workers.result(replayed, state="SUCCESS") == f"report-{run}.pdf"
    _first, again = workers.journal.read(run)
    assert again["host"] in workers.hosts.values()
    assert again["pid"] != os.getpid()
    assert workers.dead_letters_of("proof.render_report") == [resolved]


def test_duplicate_publish_to_two_workers_runs_the_body_once(workers: Workers) -> None:
    """The same message published to both workers: both receive it, the body runs once."""
    run = _run_id()
    task = workers.task("proof.book_once")
    task_id = str(uuid.uuid4())
    for name in ("a", "b"):
        task.apply_async((run,), task_id=task_id, queue=workers.queue_of(name))

    def both_succeeded() -> bool:
        outcomes = workers.journal.read(f"{run}:outcomes")
        return {o["host"] for o in outcomes if o["state"] == "SUCCESS"} == set(
            workers.hosts.values()
        )

    workers.wait_for(both_succeeded, what="both deliveries of the duplicate to succeed")
    deliveries = workers.journal.read(f"{run}:deliveries")
    assert {entry["host"] for entry in deliveries} == set(workers.hosts.values())
    assert {entry["task_id"] for entry in deliveries} == {task_id}
    assert len(workers.journal.read(f"{run}:executions")) == 1
    assert workers.app.AsyncResult(task_id).get(timeout=CASE_TIMEOUT) == "booked"
