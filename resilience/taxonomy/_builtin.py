"""The built-in table: qualified exception class names to what they mean.

Keys are ``f"{cls.__module__}.{cls.__qualname__}"`` as the libraries define
them, so nothing here imports requests, redis, psycopg, Django, Celery or
botocore. The classifier walks an exception's MRO and the closest entry wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resilience.taxonomy._probes import (
    Probe,
    botocore_probe,
    dns_probe,
    errno_probe,
    generic_probe,
    http_probe,
    sqlite_probe,
    sqlstate_probe,
    ssl_probe,
    urllib_probe,
)
from resilience.taxonomy._refiners import (
    attribute_settings_probe,
    celery_retry_probe,
    django_config_probe,
    environ_key_probe,
    psycopg_message_probe,
    pydantic_settings_probe,
    redis_response_probe,
    sqlalchemy_url_probe,
    sqlite_message_probe,
    urllib3_response_probe,
)
from resilience.taxonomy._vocabulary import FailureType

if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = ["RULES", "ClassRule"]

_T = FailureType


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassRule:
    """What one exception class means.

    Attributes:
        failure_type: the type the class alone implies (``None``: no opinion).
        confidence: how sure the class alone makes us.
        note: why, in a few words, for the evidence.
        probes: structured probes and class-scoped refiners, tried in order first.
        defer: a wrapper; a meaningful cause in its chain decides instead.
        links: attributes holding a wrapped exception (``orig``, ``reason``, ...).
        retry: overrides the profile's retry recommendation when not ``None``.
        exhausted: the exception itself says retries ran out.
    """

    failure_type: FailureType | None
    confidence: float
    note: str
    probes: tuple[Probe, ...] = ()
    defer: bool = False
    links: tuple[str, ...] = ()
    retry: bool | None = None
    exhausted: bool = False


def _r(
    failure_type: FailureType | None,
    confidence: float,
    note: str,
    *probes: Probe,
    defer: bool = False,
    links: tuple[str, ...] = (),
    retry: bool | None = None,
    exhausted: bool = False,
) -> ClassRule:
    return ClassRule(
        failure_type=failure_type,
        confidence=confidence,
        note=note,
        probes=probes,
        defer=defer,
        links=links,
        retry=retry,
        exhausted=exhausted,
    )


def _each(names: str, rule: ClassRule) -> dict[str, ClassRule]:
    return dict.fromkeys(names.split(), rule)


_NET, _TMO, _DB = _T.TRANSIENT_NETWORK, _T.EXTERNAL_TIMEOUT, _T.TRANSIENT_DATABASE
_VAL, _LOGIC, _PERM = _T.PERMANENT_VALIDATION, _T.PERMANENT_LOGIC, _T.PERMANENT_PERMISSION
_CFG, _MISSING = _T.CONFIG_INVALID_SETTING, _T.CONFIG_MISSING_SETTING
_SERVICE, _NOTFOUND = _T.CONFIG_MISSING_SERVICE, _T.PERMANENT_NOT_FOUND
_APIERR, _DOWN, _RES = _T.EXTERNAL_API_ERROR, _T.EXTERNAL_API_DOWN, _T.TRANSIENT_RESOURCE

_CONTROL = _r(
    _T.UNKNOWN,
    0.9,
    "process-control exception: the worker is stopping or the task was cancelled; "
    "not a task failure, not retried",
    retry=False,
)

_BUILTINS: dict[str, ClassRule] = {
    "builtins.BaseException": _r(None, 0.0, "base class", generic_probe),
    "builtins.Exception": _r(None, 0.0, "base class", generic_probe),
    **_each(
        "builtins.KeyboardInterrupt builtins.SystemExit builtins.GeneratorExit "
        "asyncio.exceptions.CancelledError",
        _CONTROL,
    ),
    "builtins.MemoryError": _r(_T.SYSTEM_OUT_OF_MEMORY, 0.95, "the interpreter ran out of memory"),
    "builtins.RecursionError": _r(_LOGIC, 0.85, "unbounded recursion in the task's code"),
    **_each(
        "builtins.TypeError builtins.NameError builtins.ZeroDivisionError "
        "builtins.AssertionError builtins.NotImplementedError builtins.SyntaxError "
        "builtins.ArithmeticError builtins.StopIteration builtins.StopAsyncIteration "
        "builtins.UnboundLocalError asyncio.exceptions.InvalidStateError",
        _r(_LOGIC, 0.85, "a programming error"),
    ),
    "builtins.AttributeError": _r(_LOGIC, 0.85, "a programming error", attribute_settings_probe),
    # A failed lookup in task code is a bug or an unexpected data shape; its
    # message is just the key, so message patterns never override it.
    "builtins.IndexError": _r(_LOGIC, 0.75, "a lookup the code assumed would succeed"),
    "builtins.LookupError": _r(_LOGIC, 0.75, "a lookup the code assumed would succeed"),
    "builtins.KeyError": _r(
        _LOGIC, 0.75, "a lookup the code assumed would succeed", environ_key_probe
    ),
    "builtins.ValueError": _r(_VAL, 0.7, "a value the task cannot accept"),
    "builtins.UnicodeError": _r(_VAL, 0.85, "undecodable or unencodable text"),
    "builtins.ImportError": _r(_SERVICE, 0.9, "a module the worker needs is not installed"),
    "builtins.ModuleNotFoundError": _r(_SERVICE, 0.9, "a module the worker needs is not installed"),
    "builtins.OSError": _r(None, 0.0, "an operating-system error", errno_probe, generic_probe),
    "builtins.ConnectionError": _r(_NET, 0.9, "a connection failed", errno_probe),
    "builtins.TimeoutError": _r(
        _TMO,
        0.85,
        "an operation timed out (ETIMEDOUT instead means a TCP connect timeout)",
        errno_probe,
    ),
    "builtins.FileNotFoundError": _r(_NOTFOUND, 0.85, "a file does not exist", errno_probe),
    "builtins.PermissionError": _r(_PERM, 0.9, "the OS refused access", errno_probe),
    "builtins.BlockingIOError": _r(_RES, 0.85, "a resource is temporarily unavailable"),
    "socket.gaierror": _r(_NET, 0.7, "DNS resolution failed", dns_probe),
    "socket.herror": _r(_NET, 0.7, "host lookup failed"),
    "ssl.SSLError": _r(_NET, 0.7, "a TLS error", ssl_probe),
    "ssl.SSLCertVerificationError": _r(
        _CFG, 0.9, "the server's certificate is not trusted (CA bundle or host name)"
    ),
    **_each(
        "ssl.SSLEOFError ssl.SSLZeroReturnError ssl.SSLSyscallError",
        _r(_NET, 0.85, "the TLS connection was cut"),
    ),
    "json.decoder.JSONDecodeError": _r(_VAL, 0.9, "the input is not valid JSON"),
    **_each(
        "xml.etree.ElementTree.ParseError pyexpat.ExpatError xml.parsers.expat.ExpatError "
        "struct.error _struct.error csv.Error _csv.Error decimal.DecimalException",
        _r(_VAL, 0.85, "the input cannot be parsed or converted"),
    ),
    "concurrent.futures.process.BrokenProcessPool": _r(
        _T.SYSTEM_WORKER_CRASH, 0.9, "a pool process died abruptly"
    ),
    "concurrent.futures._base.BrokenExecutor": _r(
        _T.SYSTEM_WORKER_CRASH, 0.75, "the executor's workers are broken"
    ),
    "subprocess.TimeoutExpired": _r(_TMO, 0.85, "a subprocess did not finish in time"),
    "http.client.RemoteDisconnected": _r(_NET, 0.9, "the server closed the connection"),
    "http.client.IncompleteRead": _r(_NET, 0.85, "the response was cut short"),
    "urllib.error.HTTPError": _r(_APIERR, 0.6, "an HTTP error response", urllib_probe),
    "urllib.error.URLError": _r(
        _NET, 0.8, "a URL could not be fetched", defer=True, links=("reason",)
    ),
    "smtplib.SMTPAuthenticationError": _r(_PERM, 0.9, "the SMTP server refused the login"),
    "smtplib.SMTPServerDisconnected": _r(_NET, 0.85, "the SMTP server disconnected"),
    "smtplib.SMTPRecipientsRefused": _r(_VAL, 0.85, "the recipients were refused"),
    "resilience.errors.CircuitOpenError": _r(
        _DOWN, 0.9, "a circuit breaker is open for the dependency"
    ),
    "resilience.errors.ConfigurationError": _r(_CFG, 0.9, "an invalid resilience setting"),
    "sqlite3.OperationalError": _r(
        _DB, 0.75, "a SQLite operational error", sqlite_probe, sqlite_message_probe
    ),
    "sqlite3.DatabaseError": _r(_DB, 0.6, "a SQLite error", sqlite_probe, sqlite_message_probe),
    "sqlite3.IntegrityError": _r(_VAL, 0.9, "a constraint rejected the row", sqlite_probe),
    "sqlite3.DataError": _r(_VAL, 0.85, "a value SQLite cannot store"),
    "sqlite3.ProgrammingError": _r(_LOGIC, 0.85, "the SQL or API use is wrong", sqlite_probe),
    "sqlite3.InterfaceError": _r(_LOGIC, 0.8, "the sqlite3 API was misused"),
    "sqlite3.NotSupportedError": _r(_LOGIC, 0.8, "an unsupported SQLite feature"),
}

_HTTP_CLIENTS: dict[str, ClassRule] = {
    # requests
    "requests.exceptions.RequestException": _r(
        _NET, 0.5, "an HTTP request failed", http_probe, defer=True
    ),
    "requests.exceptions.HTTPError": _r(_APIERR, 0.6, "an HTTP error response", http_probe),
    "requests.exceptions.ConnectionError": _r(_NET, 0.85, "the HTTP connection failed", defer=True),
    "requests.exceptions.ProxyError": _r(_NET, 0.8, "the proxy failed", defer=True),
    "requests.exceptions.SSLError": _r(_NET, 0.7, "TLS failed", defer=True),
    "requests.exceptions.ConnectTimeout": _r(_NET, 0.9, "connecting timed out"),
    "requests.exceptions.ReadTimeout": _r(_TMO, 0.9, "the server did not answer in time"),
    "requests.exceptions.Timeout": _r(_TMO, 0.8, "the request timed out"),
    "requests.exceptions.TooManyRedirects": _r(_APIERR, 0.8, "a redirect loop"),
    **_each(
        "requests.exceptions.MissingSchema requests.exceptions.InvalidSchema "
        "requests.exceptions.InvalidURL requests.exceptions.URLRequired "
        "requests.exceptions.InvalidProxyURL",
        _r(_CFG, 0.85, "the URL is malformed"),
    ),
    "requests.exceptions.InvalidHeader": _r(_VAL, 0.8, "a header value is invalid"),
    "requests.exceptions.ChunkedEncodingError": _r(_NET, 0.8, "the response was cut short"),
    "requests.exceptions.ContentDecodingError": _r(_APIERR, 0.8, "the response is undecodable"),
    # The body of a response the API sent is not JSON: usually an HTML error
    # page, i.e. the API failed, not our input.
    "requests.exceptions.JSONDecodeError": _r(_APIERR, 0.8, "the API's response is not JSON"),
    "requests.exceptions.InvalidJSONError": _r(_VAL, 0.8, "the request body is not JSON-able"),
    "requests.exceptions.RetryError": _r(_APIERR, 0.6, "urllib3 retries ran out", defer=True),
    # urllib3
    "urllib3.exceptions.HTTPError": _r(_NET, 0.5, "an HTTP transport error", defer=True),
    "urllib3.exceptions.MaxRetryError": _r(
        _NET, 0.6, "the connection pool gave up", defer=True, links=("reason",)
    ),
    "urllib3.exceptions.NewConnectionError": _r(_NET, 0.9, "a new connection failed", defer=True),
    "urllib3.exceptions.NameResolutionError": _r(
        _NET, 0.7, "the host name did not resolve", defer=True
    ),
    "urllib3.exceptions.ConnectTimeoutError": _r(_NET, 0.9, "connecting timed out"),
    "urllib3.exceptions.ReadTimeoutError": _r(_TMO, 0.9, "the server did not answer in time"),
    "urllib3.exceptions.TimeoutError": _r(_TMO, 0.8, "the request timed out"),
    "urllib3.exceptions.ProtocolError": _r(_NET, 0.85, "the connection broke", defer=True),
    "urllib3.exceptions.SSLError": _r(_NET, 0.7, "TLS failed", defer=True),
    "urllib3.exceptions.ProxyError": _r(_NET, 0.8, "the proxy failed", defer=True),
    "urllib3.exceptions.ResponseError": _r(
        _APIERR, 0.6, "too many error responses", urllib3_response_probe
    ),
    **_each(
        "urllib3.exceptions.LocationParseError urllib3.exceptions.LocationValueError",
        _r(_CFG, 0.8, "the URL is malformed"),
    ),
    "urllib3.exceptions.EmptyPoolError": _r(_RES, 0.85, "the HTTP connection pool is empty"),
    "urllib3.exceptions.DecodeError": _r(_APIERR, 0.8, "the response is undecodable"),
    # httpx / httpcore
    "httpx.HTTPError": _r(_NET, 0.5, "an HTTP request failed", defer=True),
    "httpx.HTTPStatusError": _r(_APIERR, 0.6, "an HTTP error response", http_probe),
    **_each(
        "httpx.ConnectError httpx.ReadError httpx.WriteError httpx.NetworkError "
        "httpx.CloseError httpcore.ConnectError httpcore.ReadError httpcore.WriteError "
        "httpcore.NetworkError",
        _r(_NET, 0.85, "the connection failed", defer=True),
    ),
    **_each(
        "httpx.ConnectTimeout httpcore.ConnectTimeout",
        _r(_NET, 0.9, "connecting timed out"),
    ),
    **_each(
        "httpx.ReadTimeout httpx.WriteTimeout httpcore.ReadTimeout httpcore.WriteTimeout",
        _r(_TMO, 0.9, "the server did not answer in time"),
    ),
    **_each(
        "httpx.PoolTimeout httpcore.PoolTimeout",
        _r(_RES, 0.9, "no HTTP connection became free in time"),
    ),
    "httpx.TimeoutException": _r(_TMO, 0.8, "the request timed out"),
    **_each(
        "httpx.RemoteProtocolError httpcore.RemoteProtocolError",
        _r(_NET, 0.85, "the server broke the connection"),
    ),
    "httpx.LocalProtocolError": _r(_LOGIC, 0.8, "the request violates HTTP"),
    "httpx.ProtocolError": _r(_NET, 0.7, "an HTTP protocol error"),
    "httpx.ProxyError": _r(_NET, 0.8, "the proxy failed"),
    **_each("httpx.UnsupportedProtocol httpx.InvalidURL", _r(_CFG, 0.85, "the URL is malformed")),
    "httpx.TooManyRedirects": _r(_APIERR, 0.8, "a redirect loop"),
    "httpx.DecodingError": _r(_APIERR, 0.8, "the response is undecodable"),
    "httpx.StreamError": _r(_LOGIC, 0.8, "the response stream was misused"),
}

_AIO = "aiohttp.client_exceptions."
_AIOHTTP: dict[str, ClassRule] = {
    _AIO + "ClientError": _r(_NET, 0.5, "an HTTP request failed", defer=True),
    _AIO + "ClientResponseError": _r(_APIERR, 0.6, "an HTTP error response", http_probe),
    _AIO + "ContentTypeError": _r(_APIERR, 0.8, "the response has the wrong content type"),
    _AIO + "TooManyRedirects": _r(_APIERR, 0.8, "a redirect loop"),
    _AIO + "ClientConnectionError": _r(_NET, 0.8, "the connection failed", defer=True),
    _AIO + "ClientOSError": _r(_NET, 0.8, "the connection failed", errno_probe, defer=True),
    _AIO + "ClientConnectorError": _r(_NET, 0.85, "connecting failed", defer=True),
    _AIO + "ClientConnectorDNSError": _r(_NET, 0.7, "the host name did not resolve", defer=True),
    _AIO + "ClientSSLError": _r(_NET, 0.7, "TLS failed", defer=True),
    _AIO + "ClientConnectorCertificateError": _r(_CFG, 0.9, "the certificate is not trusted"),
    _AIO + "ClientConnectorSSLError": _r(_NET, 0.7, "TLS failed", defer=True),
    _AIO + "ServerFingerprintMismatch": _r(_CFG, 0.85, "the certificate fingerprint differs"),
    _AIO + "ServerDisconnectedError": _r(_NET, 0.9, "the server disconnected"),
    _AIO + "ServerConnectionError": _r(_NET, 0.8, "the server connection failed"),
    _AIO + "ServerTimeoutError": _r(_TMO, 0.85, "the server did not answer in time"),
    _AIO + "ConnectionTimeoutError": _r(_NET, 0.9, "connecting timed out"),
    _AIO + "SocketTimeoutError": _r(_TMO, 0.9, "the server did not answer in time"),
    _AIO + "ClientPayloadError": _r(_NET, 0.8, "the response body was cut short"),
    _AIO + "InvalidURL": _r(_CFG, 0.85, "the URL is malformed"),
}

_RX = "redis.exceptions."
_REDIS: dict[str, ClassRule] = {
    _RX + "RedisError": _r(None, 0.0, "a redis error"),
    _RX + "ConnectionError": _r(_NET, 0.85, "the redis connection failed", defer=True),
    # Our own infrastructure rather than a provider: a redis timeout is treated
    # like any other network hiccup on the way to it.
    _RX + "TimeoutError": _r(_NET, 0.85, "redis did not answer in time"),
    _RX + "BusyLoadingError": _r(_DB, 0.9, "redis is loading its dataset"),
    _RX + "ReadOnlyError": _r(_DB, 0.9, "writing to a read-only replica (failover)"),
    **_each(
        _RX + "AuthenticationError " + _RX + "AuthorizationError " + _RX + "NoPermissionError",
        _r(_PERM, 0.9, "redis refused the credentials or ACL"),
    ),
    _RX + "AuthenticationWrongNumberOfArgsError": _r(_CFG, 0.85, "the redis AUTH setting"),
    _RX + "OutOfMemoryError": _r(_T.SYSTEM_OUT_OF_MEMORY, 0.95, "redis reached maxmemory"),
    _RX + "ResponseError": _r(_LOGIC, 0.6, "redis rejected a command", redis_response_probe),
    _RX + "DataError": _r(_VAL, 0.85, "a value redis cannot store"),
    _RX + "MaxConnectionsError": _r(_DB, 0.85, "the redis connection pool is exhausted"),
    **_each(
        _RX + "LockError " + _RX + "LockNotOwnedError",
        _r(_RES, 0.85, "a redis lock was not acquired or was lost"),
    ),
    **_each(
        " ".join(
            _RX + n
            for n in [
                "ClusterDownError",
                "TryAgainError",
                "MovedError",
                "AskError",
                "MasterDownError",
                "ClusterError",
                "SlotNotCoveredError",
                "WatchError",
            ]
        ),
        _r(_DB, 0.85, "redis is failing over, resharding or saw a concurrent write"),
    ),
    _RX + "InvalidResponse": _r(_NET, 0.8, "a garbled redis reply"),
    _RX + "ModuleError": _r(_SERVICE, 0.8, "a redis module is missing"),
}


def _dbapi(prefix: str, *, probes: tuple[Probe, ...], defer: bool) -> dict[str, ClassRule]:
    """The PEP 249 exception family of one driver (or wrapper) module."""
    return {
        prefix + "Error": _r(None, 0.0, "a database error", *probes, defer=defer),
        prefix + "DatabaseError": _r(None, 0.0, "a database error", *probes, defer=defer),
        prefix + "OperationalError": _r(
            _DB,
            0.8,
            "a database operational error",
            *probes,
            psycopg_message_probe,
            defer=defer,
        ),
        prefix + "InterfaceError": _r(
            _DB, 0.7, "the database connection is unusable", *probes, defer=defer
        ),
        prefix + "InternalError": _r(_DB, 0.6, "a database internal error", *probes, defer=defer),
        prefix + "IntegrityError": _r(
            _VAL, 0.85, "a constraint rejected the row", *probes, defer=defer
        ),
        prefix + "DataError": _r(
            _VAL, 0.85, "a value the database cannot store", *probes, defer=defer
        ),
        prefix + "ProgrammingError": _r(_LOGIC, 0.8, "the SQL is wrong", *probes, defer=defer),
        prefix + "NotSupportedError": _r(
            _LOGIC, 0.8, "an unsupported database feature", *probes, defer=defer
        ),
    }


_SA = "sqlalchemy.exc."
_SQL: dict[str, ClassRule] = {
    **_dbapi("psycopg.", probes=(sqlstate_probe,), defer=False),
    **_dbapi("psycopg2.", probes=(sqlstate_probe,), defer=False),
    "psycopg2.extensions.TransactionRollbackError": _r(
        _DB, 0.9, "the transaction was rolled back (deadlock or serialization)", sqlstate_probe
    ),
    "psycopg2.extensions.QueryCanceledError": _r(
        _DB, 0.85, "the query was cancelled (statement_timeout)", sqlstate_probe
    ),
    **_each(
        "psycopg_pool.PoolTimeout psycopg_pool.TooManyRequests",
        _r(_DB, 0.9, "the connection pool is exhausted"),
    ),
    # SQLAlchemy and Django wrap the driver's exception (.orig / __cause__),
    # which carries the SQLSTATE or SQLite code: the cause decides.
    **{
        name: ClassRule(
            failure_type=rule.failure_type,
            confidence=rule.confidence,
            note=rule.note,
            probes=rule.probes,
            defer=True,
            links=("orig",),
        )
        for name, rule in _dbapi(_SA, probes=(), defer=True).items()
    },
    _SA + "DBAPIError": _r(None, 0.0, "a wrapped driver error", defer=True, links=("orig",)),
    _SA + "StatementError": _r(None, 0.0, "a statement failed", defer=True, links=("orig",)),
    _SA + "SQLAlchemyError": _r(None, 0.0, "an SQLAlchemy error"),
    _SA + "TimeoutError": _r(_DB, 0.9, "the connection pool is exhausted (QueuePool limit)"),
    _SA + "DisconnectionError": _r(_DB, 0.85, "the database connection dropped"),
    _SA + "NoResultFound": _r(_NOTFOUND, 0.9, "the query found no row"),
    _SA + "MultipleResultsFound": _r(_LOGIC, 0.85, "the query found more than one row"),
    _SA + "ArgumentError": _r(_LOGIC, 0.8, "SQLAlchemy was called wrongly", sqlalchemy_url_probe),
    _SA + "NoSuchModuleError": _r(_SERVICE, 0.85, "a database dialect or driver is missing"),
    _SA + "InvalidRequestError": _r(_LOGIC, 0.8, "SQLAlchemy was used wrongly"),
    _SA + "CompileError": _r(_LOGIC, 0.8, "a statement cannot be compiled"),
    "sqlalchemy.orm.exc.ObjectDeletedError": _r(_NOTFOUND, 0.85, "the row was deleted"),
    "sqlalchemy.orm.exc.StaleDataError": _r(_DB, 0.8, "a concurrent update changed the row"),
    # Django
    **_dbapi("django.db.utils.", probes=(), defer=True),
    **_each(
        "django.db.utils.ConnectionDoesNotExist django.utils.connection.ConnectionDoesNotExist",
        _r(_CFG, 0.85, "no such DATABASES alias"),
    ),
    "django.db.transaction.TransactionManagementError": _r(_LOGIC, 0.85, "transaction misuse"),
}

_DJ = "django.core.exceptions."
_FRAMEWORKS: dict[str, ClassRule] = {
    _DJ + "ObjectDoesNotExist": _r(_NOTFOUND, 0.9, "the model instance does not exist"),
    _DJ + "MultipleObjectsReturned": _r(_LOGIC, 0.85, "get() matched several rows"),
    _DJ + "ValidationError": _r(_VAL, 0.9, "a value failed validation"),
    _DJ + "ImproperlyConfigured": _r(_CFG, 0.85, "Django settings are wrong", django_config_probe),
    _DJ + "AppRegistryNotReady": _r(_CFG, 0.8, "Django is not set up in this process"),
    _DJ + "PermissionDenied": _r(_PERM, 0.9, "permission denied"),
    _DJ + "SuspiciousOperation": _r(_VAL, 0.8, "suspicious input"),
    _DJ + "BadRequest": _r(_VAL, 0.85, "a bad request"),
    **_each(
        _DJ + "RequestDataTooBig " + _DJ + "TooManyFieldsSent " + _DJ + "TooManyFilesSent",
        _r(_VAL, 0.85, "the request is too large"),
    ),
    **_each(
        _DJ + "FieldDoesNotExist " + _DJ + "FieldError " + _DJ + "SynchronousOnlyOperation",
        _r(_LOGIC, 0.85, "the ORM was used wrongly"),
    ),
    "django.http.response.Http404": _r(_NOTFOUND, 0.9, "not found"),
    # Celery and its worker pool (billiard) and messaging (kombu, amqp). A time
    # limit is a timeout: the work took longer than its budget, usually while
    # waiting on something slow; retrying with backoff is the right default.
    "billiard.exceptions.SoftTimeLimitExceeded": _r(_TMO, 0.9, "the task hit its soft time limit"),
    "billiard.exceptions.TimeLimitExceeded": _r(_TMO, 0.9, "the task hit its hard time limit"),
    "billiard.exceptions.WorkerLostError": _r(
        _T.SYSTEM_WORKER_CRASH, 0.95, "the worker process died during the task"
    ),
    "billiard.exceptions.Terminated": _r(
        _T.SYSTEM_WORKER_CRASH, 0.85, "the worker process was terminated"
    ),
    "billiard.exceptions.RestartFreqExceeded": _r(
        _T.SYSTEM_WORKER_CRASH, 0.8, "pool processes keep dying"
    ),
    "celery.exceptions.NotRegistered": _r(_SERVICE, 0.95, "the task is not registered"),
    "celery.exceptions.QueueNotFound": _r(_SERVICE, 0.85, "the queue is not defined"),
    "celery.exceptions.ImproperlyConfigured": _r(_CFG, 0.85, "Celery settings are wrong"),
    "celery.exceptions.TimeoutError": _r(_TMO, 0.8, "waiting for a result timed out"),
    "celery.exceptions.Retry": _r(
        None, 0.0, "a retry request", celery_retry_probe, defer=True, links=("exc",)
    ),
    "celery.exceptions.MaxRetriesExceededError": _r(
        _T.UNKNOWN, 0.5, "Celery retries ran out", defer=True, exhausted=True
    ),
    **_each(
        "celery.exceptions.TaskRevokedError celery.exceptions.Reject celery.exceptions.Ignore",
        _r(_T.UNKNOWN, 0.8, "the task was revoked, rejected or ignored on purpose", retry=False),
    ),
    "kombu.exceptions.OperationalError": _r(_NET, 0.85, "the broker connection failed", defer=True),
    **_each(
        "kombu.exceptions.EncodeError kombu.exceptions.DecodeError",
        _r(_VAL, 0.85, "the message cannot be (de)serialized"),
    ),
    "kombu.exceptions.ContentDisallowed": _r(_CFG, 0.85, "accept_content forbids the format"),
    "kombu.exceptions.LimitExceeded": _r(_RES, 0.8, "a broker limit was reached"),
    **_each(
        "amqp.exceptions.RecoverableConnectionError amqp.exceptions.ConnectionForced",
        _r(_NET, 0.85, "the broker connection dropped"),
    ),
    "amqp.exceptions.AccessRefused": _r(_PERM, 0.85, "the broker refused access"),
    "amqp.exceptions.NotFound": _r(_NOTFOUND, 0.7, "the broker object does not exist"),
    # pydantic
    "pydantic_core._pydantic_core.ValidationError": _r(
        _VAL, 0.95, "the data failed model validation", pydantic_settings_probe
    ),
    "pydantic.errors.PydanticUserError": _r(_LOGIC, 0.85, "a pydantic model is defined wrongly"),
    # tenacity's RetryError holds the last attempt; its exception decides.
    "tenacity.RetryError": _r(
        _T.UNKNOWN,
        0.5,
        "tenacity retries ran out",
        defer=True,
        links=("last_attempt",),
        exhausted=True,
    ),
}

_BX = "botocore.exceptions."
_BOTOCORE: dict[str, ClassRule] = {
    _BX + "ClientError": _r(_APIERR, 0.6, "the AWS API returned an error", botocore_probe),
    _BX + "BotoCoreError": _r(None, 0.0, "a botocore error"),
    _BX + "EndpointConnectionError": _r(_NET, 0.85, "the endpoint is unreachable", defer=True),
    _BX + "ConnectTimeoutError": _r(_NET, 0.9, "connecting timed out"),
    _BX + "ReadTimeoutError": _r(_TMO, 0.9, "the endpoint did not answer in time"),
    _BX + "ConnectionClosedError": _r(_NET, 0.85, "the connection was closed"),
    _BX + "ProxyConnectionError": _r(_NET, 0.8, "the proxy failed", defer=True),
    _BX + "SSLError": _r(_NET, 0.7, "TLS failed", defer=True),
    _BX + "HTTPClientError": _r(_NET, 0.7, "the HTTP client failed", defer=True),
    **_each(
        _BX + "NoCredentialsError " + _BX + "PartialCredentialsError " + _BX + "NoRegionError",
        _r(_MISSING, 0.9, "AWS credentials or region are not configured"),
    ),
    **_each(
        _BX
        + "ProfileNotFound "
        + _BX
        + "InvalidConfigError "
        + _BX
        + "UnknownServiceError "
        + _BX
        + "InvalidRegionError",
        _r(_CFG, 0.85, "the AWS configuration is wrong"),
    ),
    _BX + "ParamValidationError": _r(_VAL, 0.9, "the request parameters are invalid"),
    _BX + "WaiterError": _r(_TMO, 0.7, "a waiter gave up"),
}

RULES: Mapping[str, ClassRule] = {
    **_BUILTINS,
    **_HTTP_CLIENTS,
    **_AIOHTTP,
    **_REDIS,
    **_SQL,
    **_FRAMEWORKS,
    **_BOTOCORE,
}
"""Qualified class name -> rule. The closest entry along the MRO wins."""
