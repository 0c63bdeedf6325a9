"""Real failures for ``resilience demo``: each is triggered on this machine, not faked.

Everything stays local (loopback sockets, a temporary SQLite file, ``/dev/full``)
and uses only the standard library, so the demo runs on a fresh install.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import sqlite3
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["real_failures", "short"]


def short(exc: BaseException, limit: int = 90) -> str:
    """``str(exc)`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _capture(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - capturing whatever the real call raises is the point
        return exc
    raise RuntimeError(f"{action!r} was expected to fail but did not")  # pragma: no cover


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _connect_refused() -> None:
    socket.create_connection(("127.0.0.1", _closed_port()), timeout=1).close()


def _dns_failure() -> None:
    socket.getaddrinfo("payments.example.invalid", 443)


def _read_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=0.05) as client:
            client.recv(1)  # the server accepts nothing and sends nothing


def _database_locked(directory: str) -> None:
    path = Path(directory) / "locked.sqlite3"
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY)")
        holder.execute("BEGIN EXCLUSIVE")
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("INSERT INTO jobs DEFAULT VALUES")
        finally:
            other.close()
    finally:
        holder.close()


def _unique_violation() -> None:
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE tickets (ref TEXT UNIQUE)")
        db.execute("INSERT INTO tickets VALUES ('T-1')")
        db.execute("INSERT INTO tickets VALUES ('T-1')")
    finally:
        db.close()


def _disk_full() -> None:
    with open("/dev/full", "w") as f:
        f.write("report")
        f.flush()


class _Handler(http.server.BaseHTTPRequestHandler):
    replies: ClassVar[dict[str, tuple[int, dict[str, str]]]] = {
        "/rate-limited": (429, {"Retry-After": "30"}),
        "/unavailable": (503, {}),
    }

    def do_GET(self) -> None:
        status, headers = self.replies.get(self.path, (404, {}))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Keep the demo's output clean."""


@contextlib.contextmanager
def _http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _http_get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5):  # noqa: S310 - loopback URL built above
        pass


def real_failures() -> list[tuple[str, BaseException]]:
    """Trigger each demo failure for real and return ``(label, exception)`` pairs."""
    failures: list[tuple[str, Callable[[], object]]] = [
        ("connect to a closed port", _connect_refused),
        ("read from a server that never answers", _read_timeout),
        ("look up a host that does not exist", _dns_failure),
        ("insert a duplicate key into SQLite", _unique_violation),
        ("parse a truncated JSON payload", lambda: json.loads('{"order_id": 42')),
        ("read a missing environment variable", lambda: os.environ["PAYMENTS_API_TOKEN_UNSET"]),
        ("divide by zero in task code", lambda: 1 / 0),
    ]
    results = []
    with tempfile.TemporaryDirectory() as directory:
        failures.append(
            (
                "write while another connection holds the SQLite lock",
                lambda: _database_locked(directory),
            )
        )
        if Path("/dev/full").exists():
            failures.append(("write to a full disk (/dev/full)", _disk_full))
        with _http_server() as base:
            failures.append(
                (
                    "call an API that answers 429 Retry-After: 30",
                    lambda: _http_get(f"{base}/rate-limited"),
                )
            )
            failures.append(
                ("call an API that answers 503", lambda: _http_get(f"{base}/unavailable"))
            )
            for label, action in failures:
                exc = _capture(action)
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # release the response body; its headers stay readable
                results.append((label, exc))
    return results
