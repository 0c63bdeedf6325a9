"""Live corpus cases from data stores and frameworks (SQLite, Redis, PostgreSQL drivers, ...)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

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
) -> Case:
    return Case(
        label=label,
        exc=capture(action),
        expected=expected,
        live=True,
        hard=hard,
        by_class=by_class,
    )


def _sqlalchemy(env: Environment) -> list[Case]:
    import sqlalchemy as sa

    path = Path(env.tmpdir) / "sa.db"
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    metadata = sa.MetaData()
    item = sa.Table(
        "item",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String, unique=True),
    )
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(item.insert().values(name="a"))
        connection.execute(item.insert().values(name="b"))

    def query(statement: sa.Executable, *, one: bool = False) -> None:
        with engine.connect() as connection:
            result = connection.execute(statement)
            if one:
                result.one()

    def locked() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        waiting = sa.create_engine(
            f"sqlite:///{path}", connect_args={"timeout": 0}, poolclass=sa.pool.NullPool
        )
        try:
            holder.execute("begin exclusive")
            with waiting.begin() as connection:
                connection.execute(item.insert().values(name="c"))
        finally:
            holder.execute("rollback")
            holder.close()
            waiting.dispose()

    def pool_exhausted() -> None:
        pooled = sa.create_engine(
            f"sqlite:///{path}",
            poolclass=sa.pool.QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=0.01,
        )
        try:
            with pooled.connect(), pooled.connect():
                pass
        finally:
            pooled.dispose()

    cases = [
        _case(
            "sqlalchemy .one() on no rows",
            lambda: query(sa.select(item).where(item.c.name == "zz"), one=True),
            T.PERMANENT_NOT_FOUND,
            by_class=True,
        ),
        _case(
            "sqlalchemy .one() on two rows",
            lambda: query(sa.select(item), one=True),
            T.PERMANENT_LOGIC,
            by_class=True,
        ),
        _case(
            "sqlalchemy IntegrityError wrapping sqlite3",
            lambda: query(item.insert().values(name="a")),
            T.PERMANENT_VALIDATION,
        ),
        _case(
            "sqlalchemy no such table",
            lambda: query(sa.text("select * from nope")),
            T.PERMANENT_LOGIC,
            hard=True,
        ),
        _case("sqlalchemy database is locked", locked, T.TRANSIENT_DATABASE, hard=True),
        _case("sqlalchemy QueuePool limit", pool_exhausted, T.TRANSIENT_DATABASE, by_class=True),
        _case(
            "sqlalchemy unparsable URL",
            lambda: sa.create_engine("not a database url"),
            T.CONFIG_INVALID_SETTING,
            hard=True,
        ),
        _case(
            "sqlalchemy unknown dialect",
            lambda: sa.create_engine("nodb://host/db"),
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
    ]
    engine.dispose()
    return cases


def _django(env: Environment) -> list[Case]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(Path(env.tmpdir) / "django.db"),
                }
            },
            USE_TZ=True,
        )
        django.setup()
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType
    from django.core.validators import EmailValidator
    from django.db import connection, connections

    with connection.schema_editor() as editor:
        editor.create_model(ContentType)
    ContentType.objects.create(app_label="shop", model="order")

    def duplicate() -> None:
        ContentType.objects.create(app_label="shop", model="order")

    cases = [
        _case(
            "django Model.DoesNotExist",
            lambda: ContentType.objects.get(app_label="shop", model="missing"),
            T.PERMANENT_NOT_FOUND,
            by_class=True,
        ),
        _case(
            "django OperationalError no such table",
            lambda: Group.objects.get(pk=1),
            T.PERMANENT_LOGIC,
            hard=True,
        ),
        _case("django IntegrityError unique", duplicate, T.PERMANENT_VALIDATION),
        _case(
            "django EmailValidator",
            lambda: EmailValidator()("not-an-email"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "django unknown DATABASES alias",
            lambda: connections["reporting"],
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
        _case(
            "django settings attribute missing",
            lambda: settings.TAXONOMY_CORPUS_MISSING_SETTING,
            T.CONFIG_MISSING_SETTING,
            hard=True,
        ),
    ]
    with connection.schema_editor() as editor:
        editor.delete_model(ContentType)
    connection.close()
    return cases


def _celery(env: Environment) -> list[Case]:
    import kombu
    from celery import Celery

    app = Celery("taxonomy_corpus", set_as_current=False)

    def broker_down() -> None:
        with kombu.Connection(f"redis://127.0.0.1:{env.closed_port}//") as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, interval_max=0
            )

    cases = [
        _case(
            "celery task not registered",
            lambda: app.tasks["billing.missing_task"],
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
        _case("kombu broker connection refused", broker_down, T.TRANSIENT_NETWORK),
    ]
    app.close()
    return cases


def _pydantic(env: Environment) -> list[Case]:
    import pydantic
    import pydantic_settings

    class Order(pydantic.BaseModel):
        order_id: int
        email: str

    class WorkerSettings(pydantic_settings.BaseSettings):
        taxonomy_corpus_database_url: str

    return [
        _case(
            "pydantic model validation",
            lambda: Order.model_validate({"order_id": "x", "email": 3}),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "pydantic JSON validation",
            lambda: Order.model_validate_json("{}"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "pydantic-settings missing variable",
            WorkerSettings,
            T.CONFIG_MISSING_SETTING,
            hard=True,
        ),
    ]


def _tenacity(env: Environment) -> list[Case]:
    import requests
    import tenacity

    def flaky() -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.get(f"{env.base_url}/status/503", timeout=2).raise_for_status()

    def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(1), reraise=False)
    return [
        _case(
            "tenacity RetryError over HTTP 503",
            lambda: retrying(flaky),
            T.EXTERNAL_API_DOWN,
            hard=True,
        ),
        _case(
            "tenacity RetryError over refused",
            lambda: retrying(refused),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
    ]


def _botocore(env: Environment) -> list[Case]:
    import botocore.session
    from botocore.config import Config

    def list_buckets() -> None:
        session = botocore.session.get_session()
        client = session.create_client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{env.closed_port}",
            region_name="us-east-1",
            aws_access_key_id="corpus",
            aws_secret_access_key="corpus",  # noqa: S106 - a fake key for a closed port
            config=Config(retries={"max_attempts": 0}, connect_timeout=2),
        )
        try:
            client.list_buckets()
        finally:
            client.close()

    return [
        _case("botocore endpoint connection refused", list_buckets, T.TRANSIENT_NETWORK),
    ]


# --------------------------------------------------------------------------- stores


def _sqlite(env: Environment) -> list[Case]:
    path = str(Path(env.tmpdir) / "corpus.db")
    setup = sqlite3.connect(path)
    setup.execute("create table if not exists item (id integer primary key, name text unique)")
    setup.execute("insert or ignore into item values (1, 'a')")
    setup.commit()
    setup.close()

    def locked() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        waiter = sqlite3.connect(path, timeout=0)
        try:
            holder.execute("begin exclusive")
            waiter.execute("insert into item (name) values ('b')")
        finally:
            holder.execute("rollback")
            waiter.close()
            holder.close()

    def full() -> None:
        connection = sqlite3.connect(":memory:")
        try:
            connection.execute("pragma max_page_count = 2")
            connection.execute("create table big (data blob)")
            for _ in range(64):
                connection.execute("insert into big values (zeroblob(4096))")
        finally:
            connection.close()

    def run(sql: str, uri: str = path) -> None:
        connection = sqlite3.connect(uri, uri=uri.startswith("file:"))
        try:
            connection.execute(sql)
            connection.commit()
        finally:
            connection.close()

    return [
        _case("sqlite database is locked", locked, T.TRANSIENT_DATABASE),
        _case("sqlite database or disk is full", full, T.SYSTEM_DISK_FULL),
        _case(
            "sqlite unique constraint",
            lambda: run("insert into item (name) values ('a')"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "sqlite no such table",
            lambda: run("select * from missing_table"),
            T.PERMANENT_LOGIC,
            hard=True,
        ),
        _case(
            "sqlite readonly database",
            lambda: run("insert into item (name) values ('c')", f"file:{path}?mode=ro"),
            T.PERMANENT_PERMISSION,
        ),
        _case(
            "sqlite unable to open",
            lambda: run("select 1", str(Path(env.tmpdir) / "no" / "dir" / "x.db")),
            T.CONFIG_INVALID_SETTING,
        ),
    ]


def _redis(env: Environment) -> list[Case]:
    import fakeredis
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def ping() -> None:
        client = redis.Redis(
            host="127.0.0.1",
            port=env.closed_port,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2,
        )
        try:
            client.ping()
        finally:
            client.close()

    def wrong_type() -> None:
        client = fakeredis.FakeRedis()
        try:
            client.set("key", "value")
            client.lpush("key", "item")
        finally:
            client.close()

    return [
        _case("redis closed port", ping, T.TRANSIENT_NETWORK),
        _case("redis WRONGTYPE (fakeredis)", wrong_type, T.PERMANENT_LOGIC),
    ]


def _postgres(env: Environment) -> list[Case]:
    import psycopg
    import psycopg2

    port = env.closed_port
    return [
        _case(
            "psycopg closed port",
            lambda: psycopg.connect(host="127.0.0.1", port=port, connect_timeout=2),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "psycopg2 closed port",
            lambda: psycopg2.connect(host="127.0.0.1", port=port, connect_timeout=2),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "psycopg unknown host",
            lambda: psycopg.connect(host="corpus-db.invalid", connect_timeout=2),
            env.dns_expected,
            hard=True,
        ),
        _case(
            "psycopg2 unknown host",
            lambda: psycopg2.connect(host="corpus-db.invalid", connect_timeout=2),
            env.dns_expected,
            hard=True,
        ),
    ]


def framework_cases(env: Environment) -> list[Case]:
    """All live framework cases."""
    return [
        *_sqlite(env),
        *_redis(env),
        *_postgres(env),
        *_sqlalchemy(env),
        *_django(env),
        *_celery(env),
        *_pydantic(env),
        *_tenacity(env),
        *_botocore(env),
    ]
