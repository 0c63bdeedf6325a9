"""Tests for dependency points: calls to DB, HTTP, Redis and import paths reach a hook."""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import sys
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from pytest_taskchaos._points import BUILTIN_POINTS, check_point, patch_point
from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    import types
    from collections.abc import Iterator
    from pathlib import Path


class Recorder:
    """A hook recording ``(spec, detail)`` per call; raises ``error`` when one is set."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.error = error

    def __call__(self, spec: str, detail: str) -> None:
        self.calls.append((spec, detail))
        if self.error is not None:
            raise self.error

    @property
    def details(self) -> list[str]:
        """The details of the calls, in order."""
        return [detail for _, detail in self.calls]


class Injected(Exception):
    """A fault no library raises by itself."""


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """An exit stack closed after the test."""
    with ExitStack() as exit_stack:
        yield exit_stack


APP_SOURCE = """
LIMIT = 3


def charge(amount, *, currency="EUR"):
    return ("charged", amount, currency)


async def fetch(key):
    return ("fetched", key)


class Gateway:
    def send(self, payload):
        return (self, payload)

    @staticmethod
    def ping(value):
        return ("pong", value)

    @classmethod
    def create(cls):
        return cls()

    @property
    def status(self):
        return "up"


class Sub(Gateway):
    pass
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A throwaway module with functions and a class, importable under a unique name."""
    name = f"points_app_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE)
    monkeypatch.syspath_prepend(tmp_path)
    __import__(name)
    yield sys.modules[name]
    sys.modules.pop(name, None)


# --------------------------------------------------------------------------- check_point


def test_builtin_points_are_db_http_and_redis() -> None:
    """The builtins are exactly db, http and redis, each described."""
    assert sorted(BUILTIN_POINTS) == ["db", "http", "redis"]
    assert all(BUILTIN_POINTS.values())


def test_check_point_normalises_builtins() -> None:
    """Builtin names are accepted in any case and with surrounding blanks."""
    assert check_point(" HTTP ") == "http"
    assert check_point("redis") == "redis"


def test_check_point_returns_import_paths_stripped(app: types.ModuleType) -> None:
    """A valid import path comes back as given, without surrounding blanks."""
    assert check_point(f" {app.__name__}.charge ") == f"{app.__name__}.charge"
    assert check_point(f"{app.__name__}:Gateway.send") == f"{app.__name__}:Gateway.send"


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        (
            "dbb",
            [
                "unknown dependency point 'dbb'; did you mean 'db'?",
                "Valid points: 'db', 'http', 'redis', or an import path",
            ],
        ),
        ("   ", ["dependency point is empty"]),
        ("pkg..mod", ["dependency point 'pkg..mod': not an import path"]),
        ("json:", ["dependency point 'json:': not an import path"]),
        ("no_such_pkg_xyz.mod.func", ["no module named 'no_such_pkg_xyz'"]),
        ("jsno.dumps", ["no module named 'jsno'; did you mean 'json'?"]),
        ("no_such_pkg_xyz:func", ["no module named 'no_such_pkg_xyz'"]),
        ("json.nosuch:func", ["no module named 'json.nosuch' ('json' has no 'nosuch')"]),
        (
            "json.JSONDecodr",
            ["module 'json' has no attribute 'JSONDecodr'; did you mean 'JSONDecoder'?"],
        ),
        (
            "sqlite3.Connection.execute",
            ["cannot patch 'sqlite3.Connection.execute'", "is a built-in (C) type"],
        ),
        ("json.decoder", ["'json.decoder' is a module, not a callable"]),
    ],
)
def test_check_point_rejects_bad_specs(spec: str, fragments: list[str]) -> None:
    """Each kind of bad point fails with key 'at' and a message naming what is wrong."""
    with pytest.raises(ConfigurationError) as excinfo:
        check_point(spec)
    assert excinfo.value.key == "at"
    assert excinfo.value.value == spec
    for fragment in fragments:
        assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ("chrage", "module '{m}' has no attribute 'chrage'; did you mean 'charge'?"),
        ("Gateway.sned", "class '{m}.Gateway' has no attribute 'sned'; did you mean 'send'?"),
        ("LIMIT", "'{m}.LIMIT' is not callable (it is of type 'int')"),
        ("Gateway.status", "'{m}.Gateway.status' is not callable (it is of type 'property')"),
        ("Gateway", "'{m}.Gateway' is a class; name the method the task calls"),
    ],
)
def test_check_point_names_the_bad_attribute(
    app: types.ModuleType, attribute: str, fragment: str
) -> None:
    """A missing, non-callable or class attribute is named, with a suggestion when close."""
    spec = f"{app.__name__}.{attribute}"
    with pytest.raises(ConfigurationError) as excinfo:
        check_point(spec)
    assert f"dependency point {spec!r}: " in str(excinfo.value)
    assert fragment.format(m=app.__name__) in str(excinfo.value)


def test_check_point_reports_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module raising on import is named with its error, not reported as missing."""
    name = f"points_broken_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ConfigurationError) as excinfo:
        check_point(f"{name}.func")
    assert f"importing module {name!r} failed: RuntimeError: no config" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_check_point_finds_functions_in_submodules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longest importable prefix is the module: a submodule not yet imported is found."""
    name = f"points_pkg_{uuid.uuid4().hex}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "billing.py").write_text("def charge():\n    return 1\n")
    monkeypatch.syspath_prepend(tmp_path)
    try:
        assert check_point(f"{name}.billing.charge") == f"{name}.billing.charge"
        with pytest.raises(ConfigurationError, match="did you mean 'billing'"):
            check_point(f"{name}.biling.charge")
    finally:
        for module in [m for m in sys.modules if m.startswith(name)]:
            del sys.modules[module]


# --------------------------------------------------------------------------- import paths


def test_module_function_reaches_the_hook_then_runs(app: types.ModuleType) -> None:
    """A patched function calls the hook with the spec and its path, then runs as usual."""
    hook = Recorder()
    original = app.charge
    spec = f"{app.__name__}.charge"
    with ExitStack() as stack:
        patch_point(stack, spec, hook)
        assert app.charge(5, currency="USD") == ("charged", 5, "USD")
        assert hook.calls == [(spec, spec)]
        assert inspect.signature(app.charge) == inspect.signature(original)
    assert app.charge is original
    app.charge(1)
    assert len(hook.calls) == 1


def test_a_raising_hook_is_what_the_caller_sees(app: types.ModuleType) -> None:
    """The exception the hook raises reaches the caller as is; the real call never runs."""
    error = Injected("card network down")
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.Gateway.send", Recorder(error))
        with pytest.raises(Injected) as excinfo:
            app.Gateway().send("x")
    assert excinfo.value is error


def test_method_keeps_its_bound_self(app: types.ModuleType) -> None:
    """A patched method still receives the instance it is called on."""
    hook = Recorder()
    original = vars(app.Gateway)["send"]
    gateway = app.Gateway()
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.Gateway.send", hook)
        assert gateway.send("payload") == (gateway, "payload")
    assert hook.details == [f"{app.__name__}.Gateway.send"]
    assert vars(app.Gateway)["send"] is original


def test_staticmethod_and_classmethod_keep_their_kind(app: types.ModuleType) -> None:
    """Static and class methods stay static and class methods, and are restored as they were."""
    hook = Recorder()
    static, klass = vars(app.Gateway)["ping"], vars(app.Gateway)["create"]
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.Gateway.ping", hook)
        patch_point(stack, f"{app.__name__}.Gateway.create", hook)
        assert app.Gateway.ping(1) == ("pong", 1)
        assert app.Gateway().ping(2) == ("pong", 2)
        assert isinstance(app.Sub.create(), app.Sub)
        assert isinstance(vars(app.Gateway)["ping"], staticmethod)
        assert isinstance(vars(app.Gateway)["create"], classmethod)
    assert hook.details == [f"{app.__name__}.Gateway.{n}" for n in ("ping", "ping", "create")]
    assert vars(app.Gateway)["ping"] is static
    assert vars(app.Gateway)["create"] is klass


def test_inherited_method_is_patched_on_the_named_class_only(app: types.ModuleType) -> None:
    """Patching Sub.send covers Sub, not Gateway, and leaves Sub without its own attribute."""
    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.Sub.send", hook)
        app.Sub().send(1)
        app.Gateway().send(2)
    assert hook.details == [f"{app.__name__}.Sub.send"]
    assert "send" not in vars(app.Sub)


def test_async_function_calls_the_hook_when_awaited(app: types.ModuleType) -> None:
    """An async function stays a coroutine function; the hook runs when it is awaited."""
    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.fetch", hook)
        assert inspect.iscoroutinefunction(app.fetch)
        assert asyncio.run(app.fetch("k")) == ("fetched", "k")
        assert hook.details == [f"{app.__name__}.fetch"]
        hook.error = Injected("timeout")
        with pytest.raises(Injected):
            asyncio.run(app.fetch("k"))


def test_colon_form_names_module_and_attribute(app: types.ModuleType) -> None:
    """'pkg.mod:Class.method' works; the hook gets the spec as given, the detail dotted."""
    hook = Recorder()
    spec = f"{app.__name__}:Gateway.send"
    with ExitStack() as stack:
        patch_point(stack, spec, hook)
        app.Gateway().send(1)
    assert hook.calls == [(spec, f"{app.__name__}.Gateway.send")]


def test_names_imported_before_the_patch_are_not_covered(app: types.ModuleType) -> None:
    """The documented caveat: a reference taken before the patch calls the original."""
    hook = Recorder()
    charge = app.charge
    with ExitStack() as stack:
        patch_point(stack, f"{app.__name__}.charge", hook)
        charge(1)
        app.charge(2)
    assert len(hook.calls) == 1


def test_restored_when_the_body_raises(app: types.ModuleType) -> None:
    """A failing test body still restores the original attribute."""
    original = app.charge

    def failing_test() -> None:
        with ExitStack() as stack:
            patch_point(stack, f"{app.__name__}.charge", Recorder())
            raise Injected

    with pytest.raises(Injected):
        failing_test()
    assert app.charge is original


def test_same_hook_twice_is_installed_once(app: types.ModuleType, stack: ExitStack) -> None:
    """Patching a point again with the same hook does not double the calls."""
    hook = Recorder()
    patch_point(stack, f"{app.__name__}.charge", hook)
    patch_point(stack, f"{app.__name__}.charge", hook)
    app.charge(1)
    assert len(hook.calls) == 1


def test_another_hook_for_a_patched_point_is_refused(
    app: types.ModuleType, stack: ExitStack
) -> None:
    """A second, different hook for the same point on one stack is a configuration error."""
    spec = f"{app.__name__}.charge"
    patch_point(stack, spec, Recorder())
    with pytest.raises(ConfigurationError) as excinfo:
        patch_point(stack, spec, Recorder())
    assert f"dependency point {spec!r} is already patched on this stack" in str(excinfo.value)
    assert excinfo.value.key == "at"


def test_patch_point_rejects_bad_specs(stack: ExitStack) -> None:
    """patch_point validates like check_point and patches nothing for a bad point."""
    with pytest.raises(ConfigurationError, match="unknown dependency point 'htp'"):
        patch_point(stack, "htp", Recorder())


def test_stacks_closing_out_of_order_restore_exactly(app: types.ModuleType) -> None:
    """Two stacks on one point: each hook runs while its stack is open; the last close restores."""
    first, second = Recorder(), Recorder()
    original = app.charge
    outer, inner = ExitStack(), ExitStack()
    patch_point(outer, f"{app.__name__}.charge", first)
    patch_point(inner, f"{app.__name__}.charge", second)
    app.charge(1)
    outer.close()
    app.charge(2)
    assert app.charge is not original
    inner.close()
    app.charge(3)
    assert (len(first.calls), len(second.calls)) == (1, 2)
    assert app.charge is original


# --------------------------------------------------------------------------- db: sqlite3


def test_sqlite_queries_reach_the_hook() -> None:
    """Connection and cursor queries on a connection opened while patched call the hook."""
    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        cursor = conn.cursor()
        assert cursor.execute("SELECT sum(x) FROM t").fetchone() == (3,)
        conn.executescript("SELECT 1;")
        assert isinstance(conn, sqlite3.Connection)
        assert isinstance(cursor, sqlite3.Cursor)
    assert hook.calls == [
        ("db", "sqlite3 execute"),
        ("db", "sqlite3 executemany"),
        ("db", "sqlite3 execute"),
        ("db", "sqlite3 executescript"),
    ]
    conn.execute("SELECT 1")
    assert len(hook.calls) == 4
    conn.close()


def test_sqlite_raising_hook_reaches_the_caller() -> None:
    """A sqlite3 error raised by the hook is the one the query raises."""
    error = sqlite3.OperationalError("database is locked")
    with ExitStack() as stack:
        patch_point(stack, "db", Recorder(error))
        conn = sqlite3.connect(":memory:")
        with pytest.raises(sqlite3.OperationalError) as excinfo:
            conn.execute("SELECT 1")
        conn.close()
    assert excinfo.value is error


def test_sqlite_connect_is_restored() -> None:
    """Both names of connect are the originals again after the stack closes."""
    original, dbapi2 = sqlite3.connect, sqlite3.dbapi2.connect
    with ExitStack() as stack:
        patch_point(stack, "db", Recorder())
        assert sqlite3.connect is not original
        assert sqlite3.dbapi2.connect is not dbapi2
    assert sqlite3.connect is original
    assert sqlite3.dbapi2.connect is dbapi2


def test_sqlite_custom_factories_are_kept() -> None:
    """A caller's Connection and Cursor subclasses are still used, and hooked."""

    class Audited(sqlite3.Connection):
        """A user connection class."""

    class Rows(sqlite3.Cursor):
        """A user cursor class."""

    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        conn = sqlite3.connect(":memory:", factory=Audited)
        cursor = conn.cursor(factory=Rows)
        cursor.execute("SELECT 1")
        assert isinstance(conn, Audited)
        assert isinstance(cursor, Rows)
        conn.close()
    assert hook.details == ["sqlite3 execute"]


def test_sqlite_factory_with_its_own_cursor_method_keeps_working() -> None:
    """A Connection subclass overriding cursor() keeps its default cursor class, hooked."""

    class Rows(sqlite3.Cursor):
        """A user cursor class."""

    class WithDefault(sqlite3.Connection):
        """A user connection whose cursor() has its own default factory."""

        def cursor(self, factory: Any = Rows) -> Any:
            return super().cursor(factory)

    class NoFactory(sqlite3.Connection):
        """A user connection whose cursor() takes no factory at all."""

        def cursor(self) -> Any:  # type: ignore[override]
            return super().cursor()

    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        with_default = sqlite3.connect(":memory:", factory=WithDefault)
        assert isinstance(with_default.cursor(), Rows)
        with_default.cursor().execute("SELECT 1")
        no_factory = sqlite3.connect(":memory:", factory=NoFactory)
        assert type(no_factory.cursor()) is sqlite3.Cursor
        no_factory.execute("SELECT 1")
        with_default.close()
        no_factory.close()
    assert hook.details == ["sqlite3 execute", "sqlite3 execute"]


def test_sqlite_connections_opened_before_the_patch_are_not_covered() -> None:
    """The documented limit: a connection opened earlier never reaches the hook."""
    hook = Recorder()
    conn = sqlite3.connect(":memory:")
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        conn.execute("SELECT 1")
    conn.close()
    assert hook.calls == []


# --------------------------------------------------------------------------- db: SQLAlchemy


def test_sqlalchemy_query_reaches_the_hook_once() -> None:
    """An engine query calls the hook once, though it also goes through sqlite3."""
    import sqlalchemy

    hook = Recorder()
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        engine = sqlalchemy.create_engine("sqlite://")
        with engine.connect() as conn:
            hook.calls.clear()  # the dialect's own first-connect queries
            assert conn.execute(sqlalchemy.text("SELECT 7")).scalar() == 7
        assert hook.calls == [("db", "sqlalchemy execute")]
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1"))
    assert len(hook.calls) == 1
    engine.dispose()


def test_sqlalchemy_wraps_driver_errors_like_real_ones() -> None:
    """A DB-API error of the engine's driver arrives wrapped, with the hook's error as .orig."""
    import sqlalchemy

    error = sqlite3.OperationalError("database is locked")
    engine = sqlalchemy.create_engine("sqlite://")
    with ExitStack() as stack:
        patch_point(stack, "db", Recorder(error))
        with pytest.raises(sqlalchemy.exc.OperationalError) as excinfo, engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    assert excinfo.value.orig is error
    engine.dispose()


def test_sqlalchemy_passes_other_errors_unchanged() -> None:
    """An exception that is not a DB-API error reaches the caller as raised."""
    import sqlalchemy

    error = Injected("network partition")
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:  # open the pool's connection before the patch
        with ExitStack() as stack:
            patch_point(stack, "db", Recorder(error))
            with pytest.raises(Injected) as excinfo:
                conn.execute(sqlalchemy.text("SELECT 1"))
        assert conn.execute(sqlalchemy.text("SELECT 2")).scalar() == 2
    assert excinfo.value is error
    engine.dispose()


# --------------------------------------------------------------------------- db: psycopg


def test_psycopg_cursor_execute_reaches_the_hook() -> None:
    """psycopg 3 cursors (sync and async) call the hook before running anything."""
    import psycopg

    hook = Recorder(Injected("server closed the connection"))
    cursor = object.__new__(psycopg.Cursor)  # the hook raises before the cursor is used
    async_cursor = object.__new__(psycopg.AsyncCursor)
    original = vars(psycopg.Cursor)["execute"]
    with ExitStack() as stack:
        patch_point(stack, "db", hook)
        with pytest.raises(Injected):
            cursor.execute("SELECT 1")
        with pytest.raises(Injected):
            cursor.executemany("SELECT %s", [(1,)])
        with pytest.raises(Injected):
            asyncio.run(async_cursor.execute("SELECT 1"))
    assert hook.details == ["psycopg execute", "psycopg executemany", "psycopg execute"]
    assert vars(psycopg.Cursor)["execute"] is original


@pytest.fixture
def postgres_url() -> str:
    """The test server's URL (skipped without one, unless servers are required)."""
    value = os.environ.get("RESILIENCE_TEST_POSTGRES_URL")
    if value:
        return value
    message = "RESILIENCE_TEST_POSTGRES_URL is not set: start the servers with scripts/servers.sh"
    if os.environ.get("RESILIENCE_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def test_psycopg_query_goes_through_after_the_hook(postgres_url: str) -> None:
    """On a real server, a query calls the hook once and returns its rows."""
    import psycopg

    hook = Recorder()
    with ExitStack() as stack, psycopg.connect(postgres_url) as conn:
        patch_point(stack, "db", hook)
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    assert hook.details == ["psycopg execute"]


# --------------------------------------------------------------------------- db: Django


def test_django_cursor_reaches_the_hook_without_configuring_django() -> None:
    """Django's CursorWrapper is patched in process without touching Django's settings."""
    from django.conf import settings  # type: ignore[import-untyped] # Django ships no types
    from django.db.backends.utils import CursorWrapper  # type: ignore[import-untyped]

    error = Injected("connection lost")
    original = vars(CursorWrapper)["execute"]
    with ExitStack() as stack:
        patch_point(stack, "db", Recorder(error))
        with pytest.raises(Injected) as excinfo:
            CursorWrapper(None, None).execute("SELECT 1")
    assert excinfo.value is error
    assert vars(CursorWrapper)["execute"] is original
    assert not settings.configured


def test_django_query_reaches_the_hook_once(pytester: pytest.Pytester) -> None:
    """In a configured Django (own process), a query calls the hook once and returns rows."""
    pytester.makepyfile(
        """
        from contextlib import ExitStack

        import django
        from django.conf import settings

        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
        )
        django.setup()

        from django.db import connection
        from django.db.backends.utils import CursorWrapper

        from pytest_taskchaos._points import patch_point


        def test_query():
            calls = []
            original = vars(CursorWrapper)["execute"]
            connection.ensure_connection()  # opened before: covered through Django's layer
            with ExitStack() as stack:
                patch_point(stack, "db", lambda spec, detail: calls.append((spec, detail)))
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 5")
                    assert cursor.fetchone() == (5,)
            assert calls == [("db", "django execute")]
            assert vars(CursorWrapper)["execute"] is original
        """
    )
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- http


def test_requests_detail_has_method_and_url_without_secrets() -> None:
    """requests calls reach the hook with method and URL, minus credentials and query."""
    import requests
    from requests.adapters import BaseAdapter

    class Canned(BaseAdapter):
        """Answers every request with 204, without a network."""

        def send(  # type: ignore[override] # the stub lists every option; none is used
            self, request: Any, **kwargs: Any
        ) -> requests.Response:
            response = requests.Response()
            response.status_code = 204
            response.request = request
            return response

        def close(self) -> None:
            """Nothing to close."""

    hook = Recorder()
    original = vars(requests.Session)["send"]
    with ExitStack() as stack, requests.Session() as session:
        patch_point(stack, "http", hook)
        session.mount("https://", Canned())
        response = session.get("https://user:pw@api.example.com/x?token=s3cret")
        assert response.status_code == 204
    assert hook.calls == [("http", "requests GET https://api.example.com/x")]
    assert vars(requests.Session)["send"] is original


def test_requests_raising_hook_needs_no_network() -> None:
    """A connection error from the hook is what requests.get raises."""
    import requests

    error = requests.ConnectionError("connection refused")
    with ExitStack() as stack:
        patch_point(stack, "http", Recorder(error))
        with pytest.raises(requests.ConnectionError) as excinfo:
            requests.get("https://api.example.com/x", timeout=1)
    assert excinfo.value is error


def test_httpx_sync_and_async_clients_reach_the_hook() -> None:
    """httpx Client and AsyncClient requests call the hook, then the transport answers."""
    import httpx

    hook = Recorder()
    transport = httpx.MockTransport(lambda request: httpx.Response(201, text="made"))
    originals = vars(httpx.Client)["send"], vars(httpx.AsyncClient)["send"]

    async def post_async() -> str:
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.post("https://api.example.com/orders?key=1")).text

    with ExitStack() as stack:
        patch_point(stack, "http", hook)
        with httpx.Client(transport=transport) as client:
            assert client.get("https://api.example.com/orders").status_code == 201
        assert asyncio.run(post_async()) == "made"
    assert hook.details == [
        "httpx GET https://api.example.com/orders",
        "httpx POST https://api.example.com/orders",
    ]
    assert (vars(httpx.Client)["send"], vars(httpx.AsyncClient)["send"]) == originals


def test_httpx_raising_hook_reaches_the_caller() -> None:
    """An httpx error from the hook is what the request raises, sync and async."""
    import httpx

    error = httpx.ConnectTimeout("timed out")

    async def get_async() -> None:
        async with httpx.AsyncClient() as client:
            await client.get("https://api.example.com/x")

    with ExitStack() as stack:
        patch_point(stack, "http", Recorder(error))
        with pytest.raises(httpx.ConnectTimeout) as excinfo:
            httpx.get("https://api.example.com/x")
        assert excinfo.value is error
        with pytest.raises(httpx.ConnectTimeout) as excinfo:
            asyncio.run(get_async())
        assert excinfo.value is error


def test_urllib_requests_reach_the_hook() -> None:
    """urlopen calls the hook with the method and URL, then opens it."""
    hook = Recorder()
    original = vars(urllib.request.OpenerDirector)["open"]
    with ExitStack() as stack:
        patch_point(stack, "http", hook)
        with urllib.request.urlopen("data:,hello") as response:  # noqa: S310 - a data: URL
            assert response.read() == b"hello"
        put = urllib.request.Request("data:,x", data=b"1", method="PUT")  # noqa: S310
        with urllib.request.urlopen(put) as response:  # noqa: S310 - a data: URL
            response.read()
    assert hook.details == ["urllib GET data:,hello", "urllib PUT data:,x"]
    assert vars(urllib.request.OpenerDirector)["open"] is original


def test_urllib_raising_hook_reaches_the_caller() -> None:
    """A URLError from the hook is what urlopen raises."""
    error = urllib.error.URLError("name or service not known")
    with ExitStack() as stack:
        patch_point(stack, "http", Recorder(error))
        with pytest.raises(urllib.error.URLError) as excinfo:
            urllib.request.urlopen("https://api.example.com/x", data=b"a=1")
    assert excinfo.value is error


# --------------------------------------------------------------------------- redis


def test_redis_commands_reach_the_hook_without_their_arguments() -> None:
    """Each command calls the hook with its name only; a pipeline calls it once."""
    import fakeredis
    import redis

    hook = Recorder()
    original = vars(redis.Redis)["execute_command"]
    client = fakeredis.FakeRedis()
    with ExitStack() as stack:
        patch_point(stack, "redis", hook)
        client.set("session", "s3cret")
        assert client.get("session") == b"s3cret"
        pipeline = client.pipeline()
        pipeline.incr("n")
        pipeline.incr("n")
        assert pipeline.execute() == [1, 2]
    assert hook.calls == [
        ("redis", "redis SET"),
        ("redis", "redis GET"),
        ("redis", "redis PIPELINE"),
    ]
    assert vars(redis.Redis)["execute_command"] is original
    client.get("session")
    assert len(hook.calls) == 3


def test_redis_raising_hook_reaches_the_caller() -> None:
    """A Redis error from the hook is what the command raises, sync and async."""
    import fakeredis
    import redis

    error = redis.ConnectionError("Connection refused")

    async def get_async() -> object:
        return await fakeredis.FakeAsyncRedis().get("k")

    with ExitStack() as stack:
        patch_point(stack, "redis", Recorder(error))
        with pytest.raises(redis.ConnectionError) as excinfo:
            fakeredis.FakeRedis().get("k")
        assert excinfo.value is error
        with pytest.raises(redis.ConnectionError) as excinfo:
            asyncio.run(get_async())
        assert excinfo.value is error


def test_redis_asyncio_commands_go_through() -> None:
    """Async commands call the hook, then run."""
    import fakeredis

    hook = Recorder()

    async def round_trip() -> object:
        client = fakeredis.FakeAsyncRedis()
        await client.set("k", "v")
        return await client.get("k")

    with ExitStack() as stack:
        patch_point(stack, "redis", hook)
        assert asyncio.run(round_trip()) == b"v"
    assert hook.details == ["redis SET", "redis GET"]


# --------------------------------------------------------------------------- builtins in general


def test_builtin_without_its_libraries_is_valid_and_patches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no Redis library importable, 'redis' still patches (nothing)."""
    import redis

    original = vars(redis.Redis)["execute_command"]
    for name in ("redis", "redis.asyncio", "redis.client", "redis.asyncio.client"):
        monkeypatch.setitem(sys.modules, name, None)
    with ExitStack() as stack:
        patch_point(stack, "redis", Recorder())
        assert vars(redis.Redis)["execute_command"] is original


def test_builtin_and_import_path_on_one_method_both_fire() -> None:
    """'db' and 'psycopg.Cursor.execute' together: each hook runs with its own spec."""
    import psycopg

    builtin, path = Recorder(), Recorder(Injected("boom"))
    cursor = object.__new__(psycopg.Cursor)
    original = vars(psycopg.Cursor)["execute"]
    with ExitStack() as first, ExitStack() as second:
        patch_point(first, "db", builtin)
        patch_point(second, "psycopg.Cursor.execute", path)
        with pytest.raises(Injected):
            cursor.execute("SELECT 1")
    assert builtin.calls == [("db", "psycopg execute")]
    assert path.calls == [("psycopg.Cursor.execute", "psycopg.Cursor.execute")]
    assert vars(psycopg.Cursor)["execute"] is original


def test_path_through_a_module_attribute_keeps_the_written_name() -> None:
    """'os.path.basename' is patched on the module os.path names; details say 'os.path'."""
    import os.path

    hook = Recorder()
    original = os.path.basename
    with ExitStack() as stack:
        patch_point(stack, "os.path.basename", hook)
        assert os.path.basename("/a/b.txt") == "b.txt"
    assert hook.calls == [("os.path.basename", "os.path.basename")]
    assert os.path.basename is original
