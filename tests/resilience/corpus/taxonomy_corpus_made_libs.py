"""Constructed corpus cases from third-party libraries (PostgreSQL, Redis, AWS, Celery, ...)."""

from __future__ import annotations

from taxonomy_corpus import Case  # type: ignore[import-not-found]

from resilience.taxonomy import FailureType

T = FailureType


def _case(
    label: str,
    exc: BaseException,
    expected: FailureType,
    *,
    hard: bool = False,
    by_class: bool = False,
    retry_after: float | None = None,
) -> Case:
    return Case(
        label=label,
        exc=exc,
        expected=expected,
        hard=hard,
        by_class=by_class,
        retry_after=retry_after,
    )


_PG_CONDITIONS: tuple[tuple[str, str, FailureType], ...] = (
    ("DeadlockDetected", "deadlock detected", T.TRANSIENT_DATABASE),
    (
        "SerializationFailure",
        "could not serialize access due to concurrent update",
        T.TRANSIENT_DATABASE,
    ),
    ("LockNotAvailable", "canceling statement due to lock timeout", T.TRANSIENT_DATABASE),
    ("TooManyConnections", "sorry, too many clients already", T.TRANSIENT_DATABASE),
    ("AdminShutdown", "terminating connection due to administrator command", T.TRANSIENT_DATABASE),
    (
        "UniqueViolation",
        'duplicate key value violates unique constraint "order_pkey"',
        T.PERMANENT_VALIDATION,
    ),
    (
        "ForeignKeyViolation",
        "insert or update on table violates foreign key constraint",
        T.PERMANENT_VALIDATION,
    ),
    (
        "InvalidTextRepresentation",
        'invalid input syntax for type integer: "abc"',
        T.PERMANENT_VALIDATION,
    ),
    ("UndefinedTable", 'relation "orders" does not exist', T.PERMANENT_LOGIC),
    ("InsufficientPrivilege", "permission denied for table orders", T.PERMANENT_PERMISSION),
    ("DiskFull", "could not extend file: No space left on device", T.SYSTEM_DISK_FULL),
    ("QueryCanceled", "canceling statement due to statement timeout", T.TRANSIENT_DATABASE),
)


def _postgres() -> list[Case]:
    import psycopg
    import psycopg.errors
    import psycopg2
    import psycopg2.errors

    cases = []
    for name, message, expected in _PG_CONDITIONS:
        cases.append(
            _case(f"psycopg.errors.{name}", getattr(psycopg.errors, name)(message), expected)
        )
        # psycopg2 leaves pgcode unset on errors not received from a server.
        cases.append(
            _case(
                f"psycopg2.errors.{name} (no pgcode)",
                getattr(psycopg2.errors, name)(message),
                expected,
                hard=name in {"InsufficientPrivilege", "DiskFull"},
            )
        )
    cases += [
        _case(
            "psycopg OutOfMemory",
            psycopg.errors.OutOfMemory("out of memory"),
            T.SYSTEM_OUT_OF_MEMORY,
        ),
        _case(
            "psycopg InvalidPassword",
            psycopg.errors.InvalidPassword('password authentication failed for user "app"'),
            T.PERMANENT_PERMISSION,
        ),
        _case(
            "psycopg InvalidCatalogName",
            psycopg.errors.InvalidCatalogName('database "shop" does not exist'),
            T.CONFIG_INVALID_SETTING,
        ),
        _case(
            "psycopg ConnectionFailure",
            psycopg.errors.ConnectionFailure("server closed the connection unexpectedly"),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "psycopg CannotConnectNow",
            psycopg.errors.CannotConnectNow("the database system is starting up"),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "psycopg2 OperationalError server closed",
            psycopg2.OperationalError(
                "server closed the connection unexpectedly\n\tThis probably means the server "
                "terminated abnormally\n\tbefore or while processing the request."
            ),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "psycopg2 OperationalError auth failed",
            psycopg2.OperationalError('FATAL:  password authentication failed for user "app"'),
            T.PERMANENT_PERMISSION,
            hard=True,
        ),
    ]
    return cases


def _sqlalchemy_wrapped() -> list[Case]:
    import psycopg2.errors
    import sqlalchemy.exc

    def wrapped(cls: type[sqlalchemy.exc.DBAPIError], orig: Exception) -> BaseException:
        try:
            try:
                raise orig
            except Exception as error:
                raise cls("UPDATE orders SET ...", {}, error) from error
        except sqlalchemy.exc.DBAPIError as outer:
            return outer

    return [
        _case(
            "sqlalchemy OperationalError over psycopg2 deadlock",
            wrapped(
                sqlalchemy.exc.OperationalError,
                psycopg2.errors.DeadlockDetected("deadlock detected"),
            ),
            T.TRANSIENT_DATABASE,
        ),
        _case(
            "sqlalchemy OperationalError over psycopg2 disk full",
            wrapped(
                sqlalchemy.exc.OperationalError, psycopg2.errors.DiskFull("could not extend file")
            ),
            T.SYSTEM_DISK_FULL,
            hard=True,
        ),
        _case(
            "sqlalchemy ProgrammingError over insufficient privilege",
            wrapped(
                sqlalchemy.exc.ProgrammingError,
                psycopg2.errors.InsufficientPrivilege("permission denied for table x"),
            ),
            T.PERMANENT_PERMISSION,
            hard=True,
        ),
        _case(
            "sqlalchemy TimeoutError QueuePool text",
            sqlalchemy.exc.TimeoutError(
                "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"
            ),
            T.TRANSIENT_DATABASE,
            by_class=True,
        ),
    ]


def _redis() -> list[Case]:
    import redis.exceptions as rx

    return [
        _case(
            "redis BusyLoadingError",
            rx.BusyLoadingError("Redis is loading the dataset in memory"),
            T.TRANSIENT_DATABASE,
            by_class=True,
        ),
        _case(
            "redis ReadOnlyError",
            rx.ReadOnlyError("You can't write against a read only replica."),
            T.TRANSIENT_DATABASE,
            by_class=True,
        ),
        _case(
            "redis OOM ResponseError",
            rx.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
            T.SYSTEM_OUT_OF_MEMORY,
            hard=True,
        ),
        _case(
            "redis OutOfMemoryError",
            rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
            T.SYSTEM_OUT_OF_MEMORY,
            by_class=True,
        ),
        _case(
            "redis AuthenticationError",
            rx.AuthenticationError("invalid username-password pair or user is disabled."),
            T.PERMANENT_PERMISSION,
            by_class=True,
        ),
        _case(
            "redis NoPermissionError",
            rx.NoPermissionError("this user has no permissions to run the 'set' command"),
            T.PERMANENT_PERMISSION,
            by_class=True,
        ),
        _case(
            "redis TimeoutError",
            rx.TimeoutError("Timeout reading from socket"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "redis MaxConnectionsError",
            rx.MaxConnectionsError("Too many connections"),
            T.TRANSIENT_DATABASE,
            by_class=True,
        ),
        _case(
            "redis LockError",
            rx.LockError("Unable to acquire lock"),
            T.TRANSIENT_RESOURCE,
            by_class=True,
        ),
        _case(
            "redis MISCONF",
            rx.ResponseError(
                "MISCONF Redis is configured to save RDB snapshots, but it's currently unable "
                "to persist to disk."
            ),
            T.SYSTEM_DISK_FULL,
            hard=True,
        ),
        _case(
            "redis ClusterDownError",
            rx.ClusterDownError("CLUSTERDOWN The cluster is down"),
            T.TRANSIENT_DATABASE,
            by_class=True,
        ),
        _case(
            "redis DataError",
            rx.DataError("Invalid input of type: 'dict'."),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
    ]


def _client_error(code: str, status: int, message: str = "", **headers: str) -> BaseException:
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": code, "Message": message or code},
        "ResponseMetadata": {
            "RequestId": "corpus",
            "HTTPStatusCode": status,
            "HTTPHeaders": {key.replace("_", "-"): value for key, value in headers.items()},
            "RetryAttempts": 0,
        },
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


def _botocore() -> list[Case]:
    import botocore.exceptions as bx

    return [
        _case(
            "botocore ThrottlingException",
            _client_error("ThrottlingException", 400, "Rate exceeded"),
            T.TRANSIENT_RATE_LIMIT,
            by_class=True,
        ),
        _case(
            "botocore S3 SlowDown 503",
            _client_error("SlowDown", 503, "Please reduce your request rate."),
            T.TRANSIENT_RATE_LIMIT,
            hard=True,
        ),
        _case(
            "botocore ProvisionedThroughputExceeded",
            _client_error("ProvisionedThroughputExceededException", 400),
            T.TRANSIENT_RATE_LIMIT,
            by_class=True,
        ),
        _case(
            "botocore TooManyRequests with Retry-After",
            _client_error("TooManyRequestsException", 429, retry_after="9"),
            T.TRANSIENT_RATE_LIMIT,
            retry_after=9.0,
        ),
        _case(
            "botocore AccessDenied",
            _client_error("AccessDenied", 403, "Access Denied"),
            T.PERMANENT_PERMISSION,
            by_class=True,
        ),
        _case(
            "botocore ExpiredToken",
            _client_error("ExpiredToken", 400),
            T.PERMANENT_PERMISSION,
            by_class=True,
        ),
        _case(
            "botocore NoSuchKey",
            _client_error("NoSuchKey", 404),
            T.PERMANENT_NOT_FOUND,
            by_class=True,
        ),
        _case(
            "botocore head_object 404",
            _client_error("404", 404, "Not Found"),
            T.PERMANENT_NOT_FOUND,
            by_class=True,
        ),
        _case(
            "botocore ServiceUnavailable",
            _client_error("ServiceUnavailable", 503),
            T.EXTERNAL_API_DOWN,
            by_class=True,
        ),
        _case(
            "botocore InternalError",
            _client_error("InternalError", 500),
            T.EXTERNAL_API_ERROR,
            by_class=True,
        ),
        _case(
            "botocore ValidationException",
            _client_error("ValidationException", 400),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "botocore unknown code with 502",
            _client_error("WeirdGatewayThing", 502),
            T.EXTERNAL_API_DOWN,
            hard=True,
        ),
        _case(
            "botocore RequestTimeTooSkewed",
            _client_error("RequestTimeTooSkewed", 403),
            T.CONFIG_INVALID_SETTING,
            hard=True,
        ),
        _case(
            "botocore ReadTimeoutError",
            bx.ReadTimeoutError(endpoint_url="https://s3.amazonaws.com/bucket"),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "botocore ConnectTimeoutError",
            bx.ConnectTimeoutError(endpoint_url="https://s3.amazonaws.com/bucket"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "botocore NoCredentialsError",
            bx.NoCredentialsError(),
            T.CONFIG_MISSING_SETTING,
            by_class=True,
        ),
        _case(
            "botocore NoRegionError", bx.NoRegionError(), T.CONFIG_MISSING_SETTING, by_class=True
        ),
        _case(
            "botocore ParamValidationError",
            bx.ParamValidationError(report='Missing required parameter in input: "Key"'),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
    ]


def _celery() -> list[Case]:
    import billiard.exceptions
    import celery.exceptions as ce
    import kombu.exceptions as ke

    def max_retries() -> BaseException:
        try:
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError:
                raise ce.MaxRetriesExceededError("Can't retry billing.charge[1] args:() kwargs:{}")  # noqa: B904
        except ce.MaxRetriesExceededError as error:
            return error

    return [
        _case(
            "celery SoftTimeLimitExceeded",
            ce.SoftTimeLimitExceeded(),
            T.EXTERNAL_TIMEOUT,
            by_class=True,
        ),
        _case(
            "celery TimeLimitExceeded", ce.TimeLimitExceeded(300), T.EXTERNAL_TIMEOUT, by_class=True
        ),
        _case(
            "billiard WorkerLostError",
            billiard.exceptions.WorkerLostError(
                "Worker exited prematurely: signal 9 (SIGKILL) Job: 3."
            ),
            T.SYSTEM_WORKER_CRASH,
            by_class=True,
        ),
        _case("celery Terminated", ce.Terminated(15), T.SYSTEM_WORKER_CRASH, by_class=True),
        _case(
            "celery NotRegistered constructed",
            ce.NotRegistered("billing.charge"),
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
        _case(
            "celery QueueNotFound",
            ce.QueueNotFound("Queue 'reports' missing"),
            T.CONFIG_MISSING_SERVICE,
            by_class=True,
        ),
        _case(
            "celery Retry wrapping a refused connection",
            ce.Retry(
                "Retry in 30s", exc=ConnectionRefusedError(111, "Connection refused"), when=30
            ),
            T.TRANSIENT_NETWORK,
            hard=True,
            retry_after=30.0,
        ),
        _case(
            "celery MaxRetriesExceededError over a reset",
            max_retries(),
            T.TRANSIENT_NETWORK,
            hard=True,
        ),
        _case(
            "kombu OperationalError constructed",
            ke.OperationalError("[Errno 111] Connection refused"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "kombu EncodeError",
            ke.EncodeError("Object of type Decimal is not JSON serializable"),
            T.PERMANENT_VALIDATION,
            by_class=True,
        ),
        _case(
            "kombu ContentDisallowed",
            ke.ContentDisallowed("Refusing to deserialize untrusted content of type pickle"),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
    ]


def _http_made() -> list[Case]:
    import httpx
    import requests
    import urllib3.exceptions

    return [
        _case(
            "requests ConnectTimeout",
            requests.exceptions.ConnectTimeout(
                "HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded"
            ),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "httpx ConnectTimeout",
            httpx.ConnectTimeout("timed out"),
            T.TRANSIENT_NETWORK,
            by_class=True,
        ),
        _case(
            "httpx PoolTimeout", httpx.PoolTimeout("timed out"), T.TRANSIENT_RESOURCE, by_class=True
        ),
        _case(
            "urllib3 LocationParseError",
            urllib3.exceptions.LocationParseError("http://[::1"),
            T.CONFIG_INVALID_SETTING,
            by_class=True,
        ),
    ]


def _django_made() -> list[Case]:
    import django.core.exceptions as dj
    import django.http

    return [
        _case(
            "django ImproperlyConfigured SECRET_KEY empty",
            dj.ImproperlyConfigured("The SECRET_KEY setting must not be empty."),
            T.CONFIG_MISSING_SETTING,
            hard=True,
        ),
        _case(
            "django ImproperlyConfigured bad ENGINE",
            dj.ImproperlyConfigured(
                "'django.db.backends.mysqlx' isn't an available database backend."
            ),
            T.CONFIG_INVALID_SETTING,
        ),
        _case(
            "django PermissionDenied", dj.PermissionDenied(), T.PERMANENT_PERMISSION, by_class=True
        ),
        _case(
            "django MultipleObjectsReturned",
            dj.MultipleObjectsReturned("get() returned more than one Order -- it returned 2!"),
            T.PERMANENT_LOGIC,
            by_class=True,
        ),
        _case(
            "django Http404",
            django.http.Http404("No Order matches the given query."),
            T.PERMANENT_NOT_FOUND,
            by_class=True,
        ),
    ]


def library_cases() -> list[Case]:
    """Every constructed third-party case."""
    return [
        *_postgres(),
        *_sqlalchemy_wrapped(),
        *_redis(),
        *_botocore(),
        *_celery(),
        *_http_made(),
        *_django_made(),
    ]
