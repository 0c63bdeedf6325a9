"""Live corpus cases: exceptions triggered for real against local resources."""

from __future__ import annotations

import asyncio
import base64
import decimal
import json
import os
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from taxonomy_corpus import Case, Environment, capture  # type: ignore[import-not-found]

from resilience.taxonomy import FailureType

if TYPE_CHECKING:
    from collections.abc import Callable

T = FailureType


def _case(
    label: str,
    action: Callable[[], object],
    expected: FailureType,
    *,
    hard: bool = False,
    by_class: bool = False,
    retry_after: float | None = None,
) -> Case:
    return Case(
        label=label,
        exc=capture(action),
        expected=expected,
        live=True,
        hard=hard,
        by_class=by_class,
        retry_after=retry_after,
    )


# --------------------------------------------------------------------------- stdlib


def _stdlib(env: Environment) -> list[Case]:
    port = env.closed_port

    def refused() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def dev_full() -> None:
        with open("/dev/full", "w") as handle:
            handle.write("x")
            handle.flush()

    def socket_timeout() -> None:
        left, right = socket.socketpair()
        with left, right:
            left.settimeout(0.01)
            left.recv(1)

    def would_block() -> None:
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(False)
            left.recv(1)

    def broken_pipe() -> None:
        left, right = socket.socketpair()
        with left:
            right.close()
            for _ in range(64):
                left.send(b"x" * 65536)

    def reset() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            with socket.create_connection(listener.getsockname(), timeout=2) as client:
                server, _ = listener.accept()
                server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                server.close()
                client.recv(1)

    def environ_key() -> None:
        os.environ["TAXONOMY_CORPUS_MISSING_SETTING"]

    def recursion() -> None:
        def down(n: int) -> int:
            return down(n + 1) + 1

        down(0)

    async def wait_for() -> None:
        await asyncio.wait_for(asyncio.Event().wait(), 0.001)

    def undefined_name() -> None:
        exec("undefined_variable_in_task + 1", {})  # noqa: S102 - a real NameError

    def closed_loop() -> None:
        loop = asyncio.new_event_loop()
        loop.close()
        loop.call_soon(print)

    missing = Path(env.tmpdir) / "missing" / "input.csv"
    return [
        _case(
            "Decimal of text", lambda: decimal.Decimal("12,50"), T.PERMANENT_VALIDATION, hard=True
        ),
        _case(
            "XML parse error",
            lambda: ElementTree.fromstring("<order><id>7</order>"),  # noqa: S314 - our literal
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "struct unpack short buffer",
            lambda: struct.unpack(">I", b"\x00\x01"),
            T.PERMANENT_VALIDATION,
            hard=True,
        ),
        _case(
            "base64 bad padding",
            lambda: base64.b64decode("abc", validate=True),
            T.PERMANENT_VALIDATION,
        ),
        _case("call_soon on closed event loop", closed_loop, T.PERMANENT_LOGIC, hard=True),
        _case("socket connect to closed port", refused, T.TRANSIENT_NETWORK),
        _case(
            "getaddrinfo on .invalid",
            lambda: socket.getaddrinfo("corpus.invalid", 80),
            env.dns_expected,
        ),
        _case("write to /dev/full", dev_full, T.SYSTEM_DISK_FULL),
        _case("socket recv timeout", socket_timeout, T.EXTERNAL_TIMEOUT, by_class=True),
        _case("non-blocking recv", would_block, T.TRANSIENT_RESOURCE),
        _case("send on closed socketpair", broken_pipe, T.TRANSIENT_NETWORK),
        _case("TCP reset by peer", reset, T.TRANSIENT_NETWORK),
        _case("open missing file", missing.open, T.PERMANENT_NOT_FOUND),
        _case("os.environ missing key", environ_key, T.CONFIG_MISSING_SETTING, hard=True),
        _case("dict missing key", lambda: {"a": 1}["b"], T.PERMANENT_LOGIC, by_class=True),
        _case(
            "json.loads garbage",
            lambda: json.loads("{not json"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case("int() of text", lambda: int("twelve"), T.PERMANENT_VALIDATION),
        _case(
            "undecodable bytes",
            lambda: b"\xff\xfe\xfa".decode("utf-8"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case("division by zero", lambda: 1 / 0, T.PERMANENT_LOGIC, by_class=True),
        _case("None attribute", lambda: None.id, T.PERMANENT_LOGIC, by_class=True),  # type: ignore[attr-defined]
        _case("str + int", lambda: "a" + 1, T.PERMANENT_LOGIC, by_class=True),  # type: ignore[operator]
        _case("undefined name", undefined_name, T.PERMANENT_LOGIC, by_class=True),
        _case(
            "index out of range",
            lambda: [][1],  # noqa: PLE0643 - the IndexError is the point
            T.PERMANENT_LOGIC,
            by_class=True,
        ),
        _case(
            "import missing module",
            lambda: __import__("taxonomy_corpus_module_that_does_not_exist"),
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
        _case("huge allocation", lambda: bytearray(2**62), T.SYSTEM_OUT_OF_MEMORY, by_class=True),
        _case("runaway recursion", recursion, T.PERMANENT_LOGIC, by_class=True),
        _case(
            "asyncio.wait_for timeout",
            lambda: asyncio.run(wait_for()),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case("next() on empty iterator", lambda: next(iter(())), T.PERMANENT_LOGIC, by_class=True),
    ]


def _urllib(env: Environment) -> list[Case]:
    base = env.base_url

    def fetch(url: str) -> None:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - local test server
            pass

    def disconnected() -> None:
        import http.client

        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=2)
        try:
            connection.request("GET", "/reset")
            connection.getresponse()
        finally:
            connection.close()

    def http_error(status: int, query: str = "") -> BaseException:
        error = capture(lambda: fetch(f"{base}/status/{status}{query}"))
        if isinstance(error, urllib.error.HTTPError):
            error.close()
        return error

    return [
        Case(label="urllib 404", exc=http_error(404), expected=T.PERMANENT_NOT_FOUND, live=True),
        Case(
            label="urllib 429 Retry-After",
            exc=http_error(429, "?retry_after=17"),
            expected=T.TRANSIENT_RATE_LIMIT,
            live=True,
            retry_after=17.0,
        ),
        _case(
            "urllib closed port",
            lambda: fetch(f"http://127.0.0.1:{env.closed_port}/"),
            T.TRANSIENT_NETWORK,
        ),
        _case("http.client remote disconnected", disconnected, T.TRANSIENT_NETWORK, by_class=True),
    ]


# --------------------------------------------------------------------------- requests


def _requests(env: Environment) -> list[Case]:
    import requests

    base = env.base_url

    def get(url: str, timeout: float | tuple[float, float] = 2) -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.get(url, timeout=timeout).raise_for_status()

    def body_json() -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.get(f"{base}/html", timeout=2).json()

    def status(code: int, expected: FailureType, query: str = "", **extra: object) -> Case:
        return _case(
            f"requests raise_for_status {code}{query}",
            lambda: get(f"{base}/status/{code}{query}"),
            expected,
            **extra,
        )  # type: ignore[arg-type]

    return [
        _case(
            "requests closed port",
            lambda: get(f"http://127.0.0.1:{env.closed_port}/"),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
        _case(
            "requests unknown host",
            lambda: get("http://corpus-host.invalid/"),
            env.dns_expected,
            hard=True,
        ),
        status(429, T.TRANSIENT_RATE_LIMIT, "?retry_after=120", retry_after=120.0),
        status(503, T.EXTERNAL_API_DOWN, "?retry_after=30", retry_after=30.0),
        status(502, T.EXTERNAL_API_DOWN),
        status(504, T.EXTERNAL_TIMEOUT),
        status(500, T.EXTERNAL_API_ERROR),
        status(404, T.PERMANENT_NOT_FOUND),
        status(410, T.PERMANENT_NOT_FOUND),
        status(401, T.PERMANENT_PERMISSION),
        status(403, T.PERMANENT_PERMISSION),
        status(400, T.PERMANENT_VALIDATION),
        status(409, T.PERMANENT_VALIDATION),
        status(422, T.PERMANENT_VALIDATION),
        status(429, T.TRANSIENT_RATE_LIMIT, "?retry_after=garbage", hard=True),
        _case(
            "requests read timeout",
            lambda: get(f"{base}/slow", timeout=(2, 0.05)),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case("requests remote disconnected", lambda: get(f"{base}/reset"), T.TRANSIENT_NETWORK),
        _case(
            "requests TLS to plain HTTP port",
            lambda: get(base.replace("http://", "https://") + "/"),
            T.CONFIG_INVALID_SETTING,
            hard=True,
        ),
        _case(
            "requests redirect loop",
            lambda: get(f"{base}/loop"),
            T.EXTERNAL_API_ERROR,
            by_class=True,
        ),
        _case(
            "requests missing schema",
            lambda: get("example.invalid/path"),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
        _case(
            "requests invalid schema",
            lambda: get("htp://example.invalid/"),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
        _case(
            "requests .json() on HTML", body_json, T.EXTERNAL_API_ERROR, hard=True, by_class=True
        ),
    ]


def _urllib3(env: Environment) -> list[Case]:
    import urllib3

    base = env.base_url

    def request(url: str, **options: object) -> None:
        with urllib3.PoolManager() as pool:
            pool.request("GET", url, **options)  # type: ignore[arg-type]

    return [
        _case(
            "urllib3 closed port (retries=False)",
            lambda: request(f"http://127.0.0.1:{env.closed_port}/", retries=False),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "urllib3 closed port (Retry(0))",
            lambda: request(f"http://127.0.0.1:{env.closed_port}/", retries=urllib3.Retry(0)),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "urllib3 read timeout",
            lambda: request(
                f"{base}/slow", retries=False, timeout=urllib3.Timeout(connect=2, read=0.05)
            ),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "urllib3 status_forcelist 503",
            lambda: request(
                f"{base}/status/503", retries=urllib3.Retry(total=0, status_forcelist=[503])
            ),
            T.EXTERNAL_API_DOWN,
            hard=True,
        ),
        _case(
            "urllib3 remote disconnected",
            lambda: request(f"{base}/reset", retries=False),
            T.TRANSIENT_NETWORK,
        ),
    ]


def _httpx(env: Environment) -> list[Case]:
    import httpx

    base = env.base_url

    def get(url: str, timeout: httpx.Timeout | float = 2) -> None:
        with httpx.Client(trust_env=False, timeout=timeout) as client:
            client.get(url).raise_for_status()

    return [
        _case(
            "httpx closed port",
            lambda: get(f"http://127.0.0.1:{env.closed_port}/"),
            T.TRANSIENT_NETWORK,
        ),
        _case(
            "httpx unknown host",
            lambda: get("http://corpus-host.invalid/"),
            env.dns_expected,
            hard=True,
        ),
        _case(
            "httpx 429 Retry-After",
            lambda: get(f"{base}/status/429?retry_after=5"),
            T.TRANSIENT_RATE_LIMIT,
            retry_after=5.0,
        ),
        _case(
            "httpx 429 Retry-After HTTP-date",
            lambda: get(f"{base}/status/429?date_in=90"),
            T.TRANSIENT_RATE_LIMIT,
            hard=True,
        ),
        _case("httpx 503", lambda: get(f"{base}/status/503"), T.EXTERNAL_API_DOWN),
        _case("httpx 504", lambda: get(f"{base}/status/504"), T.EXTERNAL_TIMEOUT),
        _case("httpx 500", lambda: get(f"{base}/status/500"), T.EXTERNAL_API_ERROR),
        _case("httpx 404", lambda: get(f"{base}/status/404"), T.PERMANENT_NOT_FOUND),
        _case("httpx 401", lambda: get(f"{base}/status/401"), T.PERMANENT_PERMISSION),
        _case(
            "httpx read timeout",
            lambda: get(f"{base}/slow", timeout=httpx.Timeout(2, read=0.05)),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "httpx remote protocol error",
            lambda: get(f"{base}/reset"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "httpx unsupported protocol",
            lambda: get("ftp://example.invalid/"),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
    ]


def _aiohttp(env: Environment) -> list[Case]:
    import aiohttp

    base = env.base_url

    async def fetch(url: str, timeout: aiohttp.ClientTimeout | None = None) -> None:
        async with (
            aiohttp.ClientSession(timeout=timeout or aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            response.raise_for_status()
            await response.read()

    def run(url: str, timeout: aiohttp.ClientTimeout | None = None) -> Callable[[], object]:
        return lambda: asyncio.run(fetch(url, timeout))

    return [
        _case(
            "aiohttp closed port", run(f"http://127.0.0.1:{env.closed_port}/"), T.TRANSIENT_NETWORK
        ),
        _case(
            "aiohttp unknown host", run("http://corpus-host.invalid/"), env.dns_expected, hard=True
        ),
        _case(
            "aiohttp 429 Retry-After",
            run(f"{base}/status/429?retry_after=42"),
            T.TRANSIENT_RATE_LIMIT,
            retry_after=42.0,
        ),
        _case("aiohttp 503", run(f"{base}/status/503"), T.EXTERNAL_API_DOWN),
        _case("aiohttp 403", run(f"{base}/status/403"), T.PERMANENT_PERMISSION),
        _case(
            "aiohttp read timeout",
            run(f"{base}/slow", aiohttp.ClientTimeout(total=2, sock_read=0.05)),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "aiohttp server disconnected", run(f"{base}/reset"), T.TRANSIENT_NETWORK, by_class=True
        ),
        _case("aiohttp invalid URL", run("not a url"), T.CONFIG_INVALID_SETTING, by_class=True),
    ]


def live_cases(env: Environment) -> list[Case]:
    """Every live case, plus the framework ones (SQLAlchemy, Django, Celery...)."""
    from taxonomy_corpus_frameworks import framework_cases  # type: ignore[import-not-found]

    return [
        *_stdlib(env),
        *_urllib(env),
        *_requests(env),
        *_urllib3(env),
        *_httpx(env),
        *_aiohttp(env),
        *framework_cases(env),
    ]
