"""Private Redis and PostgreSQL servers that a test may stop and restart.

The shared servers of a test run (``RESILIENCE_TEST_*_URL``) serve every test at
once, so no test may stop them. Outage tests start their own server on a free
port instead, stop it in the middle of the test and start it again on the same
port, the way a real server restart looks to a client.

A missing server binary skips the test with the reason, unless
``RESILIENCE_REQUIRE_SERVERS=1`` (set by CI), which makes it a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["PG_BIN", "PrivatePostgres", "PrivateRedis", "free_port", "require"]

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Where the PostgreSQL 15 server binaries live (Debian's layout)."""

_START_TIMEOUT = 60.0


def require(present: bool, what: str) -> None:
    """Skip the test when ``what`` is missing; fail instead when servers are required."""
    if present:
        return
    message = f"{what} is not installed, so the outage test cannot start a private server"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (RESILIENCE_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(message)


def free_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _drain(stream: IO[str]) -> None:
    # The server keeps logging after it is ready: a full pipe would block it.
    for _ in stream:
        pass


class PrivateRedis:
    """One ``redis-server`` subprocess on a fixed free port, stoppable and restartable.

    Args:
        directory: where the server keeps its append-only file, if any.
        persistent: keep data across a restart (``appendonly yes``, fsync on every
            write), as a Redis that holds dead letters must; otherwise the server
            forgets everything when it stops, like the shared test server.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        require(shutil.which("redis-server") is not None, "redis-server")
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's URL (the same across restarts)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        assert self.process is None, "already running"
        aof = ["--appendonly", "yes", "--appendfsync", "always"]
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *(aof if self.persistent else ["--appendonly", "no"]),
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        seen: list[str] = []
        # Reading the log blocks until the server says it is ready: no polling.
        for line in process.stdout:
            seen.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            process.wait()
            process.stdout.close()
            raise RuntimeError("redis-server did not start:\n" + "".join(seen[-20:]))
        self._drainer = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
        self._drainer.start()
        self.process = process

    def stop(self) -> None:
        """Stop the server (SIGTERM: a clean shutdown) and wait until it is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._drainer is not None:
            self._drainer.join()  # it ends at the log's end of file
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        """Stop the server if it runs, then start it again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrivatePostgres:
    """One PostgreSQL 15 cluster in a temporary directory, stoppable and restartable.

    ``initdb`` refuses to run as root, so when the tests run as root the cluster
    belongs to the ``postgres`` user and every server command runs as that user.
    The directory is made with ``tempfile`` rather than pytest's ``tmp_path``,
    whose parent directories only root may enter.
    """

    def __init__(self) -> None:
        require((PG_BIN / "initdb").exists(), f"PostgreSQL 15 ({PG_BIN}/initdb)")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="resilience-outage-pg-"))
        self.data = self.directory / "data"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, user="postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        self.running = False

    @property
    def url(self) -> str:
        """The server's URL (the same across restarts)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as_owner, str(PG_BIN / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=_START_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the server and return once it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """Stop the server (``-m fast``: sessions are cut, as in a failover) and wait."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def restart(self) -> None:
        """Stop the server if it runs, then start it again on the same port."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
