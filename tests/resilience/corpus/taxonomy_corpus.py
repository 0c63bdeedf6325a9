"""The labelled taxonomy corpus: real exceptions from real libraries, each with its expected type.

Used by ``tests/resilience/test_taxonomy_corpus.py`` and ``bench/classify.py``.
Live cases are triggered against local resources only (a closed port, a local
HTTP server thread, SQLite files, ``/dev/full``, the resolver for ``.invalid``);
cases needing a real server (PostgreSQL SQLSTATEs, AWS error responses, Celery
worker deaths) are built from the libraries' own exception classes.

Load with :func:`build_corpus` inside ``with corpus_environment() as env``.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One labelled exception.

    Attributes:
        label: a short unique description.
        exc: the exception.
        expected: the failure type a careful human would assign.
        live: whether the exception was triggered for real (not constructed).
        hard: whether the case is a known trap (wording, wrapping, near-miss numbers).
        by_class: whether the class alone should decide (no message needed).
        retry_after: the retry_after the classification must report, if any.
    """

    label: str
    exc: BaseException
    expected: FailureType
    live: bool = False
    hard: bool = False
    by_class: bool = False
    retry_after: float | None = None


@dataclass(slots=True)
class Environment:
    """Local resources the live cases run against."""

    base_url: str
    closed_port: int
    dns_errno: int
    tmpdir: str
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def dns_expected(self) -> FailureType:
        """What the sandbox resolver's answer for ``.invalid`` means (EAI_AGAIN vs EAI_NONAME)."""
        if self.dns_errno == getattr(socket, "EAI_AGAIN", -3):
            return FailureType.TRANSIENT_NETWORK
        return FailureType.CONFIG_INVALID_SETTING


def capture(action: Callable[[], object]) -> BaseException:
    """Run ``action`` and return what it raised; fail loudly when it did not raise."""
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError(f"{action!r} did not raise")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers /status/<code>?retry_after=..., /slow, /reset, /html, /loop."""

    protocol_version = "HTTP/1.1"
    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet."""

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            # The client gave up first (read-timeout cases): nothing to answer.
            self.close_connection = True

    def do_GET(self) -> None:
        """Route by path."""
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if parts.path.startswith("/status/"):
            headers = {}
            if "retry_after" in query:
                headers["Retry-After"] = query["retry_after"]
            if "date_in" in query:
                when = time.time() + float(query["date_in"])
                headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
            if "reset" in query:
                headers["X-RateLimit-Reset"] = query["reset"]
            self._reply(int(parts.path.rsplit("/", 1)[1]), headers, b"error")
        elif parts.path == "/slow":
            self.release.wait(10)
            self._reply(200, {}, b"late")
        elif parts.path == "/reset":
            self.close_connection = True
        elif parts.path == "/html":
            self._reply(200, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")
        elif parts.path == "/loop":
            self._reply(302, {"Location": "/loop"})
        else:
            self._reply(200, {}, b"ok")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up on purpose are part of the corpus, not errors."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _dns_errno() -> int:
    try:
        socket.getaddrinfo("taxonomy-corpus.invalid", 80)
    except socket.gaierror as error:
        return int(error.errno)
    raise AssertionError("a .invalid name resolved")


@contextlib.contextmanager
def corpus_environment(tmpdir: str) -> Iterator[Environment]:
    """Start the local HTTP server; stop it and release slow handlers on exit."""
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield Environment(
            base_url=f"http://{host!s}:{port}",
            closed_port=_closed_port(),
            dns_errno=_dns_errno(),
            tmpdir=tmpdir,
            release=release,
        )
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def build_corpus(env: Environment) -> list[Case]:
    """Every case: live ones against ``env``, then constructed ones."""
    from taxonomy_corpus_live import live_cases  # type: ignore[import-not-found]
    from taxonomy_corpus_made import made_cases  # type: ignore[import-not-found]

    cases = [*live_cases(env), *made_cases()]
    labels = [case.label for case in cases]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise AssertionError(f"duplicate corpus labels: {sorted(duplicates)}")
    return cases
