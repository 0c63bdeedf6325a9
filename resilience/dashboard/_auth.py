"""Who may use the dashboard: bearer tokens, signed session cookies, roles and CSRF tokens.

Two roles: ``read`` (look) and ``operator`` (look and act). The API and
``/metrics`` take ``Authorization: Bearer <token>``; pages take a session cookie
set by the login form after it checks a token. Tokens are compared in constant
time. The cookie is ``value.signature`` (HMAC-SHA256 with a per-app secret),
HttpOnly and SameSite=Strict; it carries the role, an expiry and a session id to
which the CSRF token of every form is bound (an HMAC of the session id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from resilience.errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "LOGIN_NONCE_COOKIE",
    "READ_TOKEN_ENV",
    "SESSION_COOKIE",
    "TOKEN_ENV",
    "AuthMiddleware",
    "Credentials",
    "Role",
    "Session",
]

TOKEN_ENV = "RESILIENCE_DASHBOARD_TOKEN"  # noqa: S105 - a variable name, not a secret
"""Environment variable holding the operator token."""
READ_TOKEN_ENV = "RESILIENCE_DASHBOARD_READ_TOKEN"  # noqa: S105 - a variable name
"""Environment variable holding the read-only token."""
SESSION_COOKIE = "resilience_session"
LOGIN_NONCE_COOKIE = "resilience_login"
_SESSION_SECONDS = 12 * 3600
_MIN_TOKEN_LENGTH = 16
# Paths served without a session: the login form itself.
_OPEN_PATHS = frozenset({"/login", "/login/"})
# Posts any logged-in role may make: ending its own session.
_ANY_ROLE_POSTS = frozenset({"/logout", "/logout/"})


class Role(StrEnum):
    """What a token or session may do."""

    READ = "read"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A logged-in browser: its role, expiry and the id its CSRF token is bound to."""

    role: Role
    expires: float
    sid: str


class Credentials:
    """The configured tokens and the secret that signs sessions.

    Args:
        token: the operator token.
        read_token: the read-only token.
        secret: the session-signing key (default: random, so sessions end with the process).

    Raises:
        ConfigurationError: no token at all (there are no default credentials), a
            token shorter than 16 characters, or the same token for both roles.
    """

    def __init__(
        self, *, token: str | None, read_token: str | None, secret: bytes | None = None
    ) -> None:
        if not token and not read_token:
            raise ConfigurationError(
                f"the dashboard needs a token and has none: set {TOKEN_ENV} (operator) "
                f"and/or {READ_TOKEN_ENV} (read-only), or pass token= / read_token= to "
                "create_app; there are no default credentials",
                key="token",
            )
        for key, value in (("token", token), ("read_token", read_token)):
            if value is not None and value != "" and len(value) < _MIN_TOKEN_LENGTH:
                raise ConfigurationError(
                    f"{key} must be at least {_MIN_TOKEN_LENGTH} characters long, "
                    f"got {len(value)} (generate one with: python -c "
                    "'import secrets; print(secrets.token_urlsafe(32))')",
                    key=key,
                )
        if token and token == read_token:
            raise ConfigurationError(
                "token and read_token must differ: one token cannot be both roles",
                key="read_token",
            )
        self._tokens = [
            (t.encode(), r) for t, r in ((token, Role.OPERATOR), (read_token, Role.READ)) if t
        ]
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def role_of(self, token: str) -> Role | None:
        """The role of ``token``, compared in constant time, or ``None``."""
        given = token.encode("utf-8", "replace")
        found: Role | None = None
        for expected, role in self._tokens:
            # Every configured token is compared, so timing reveals neither which matched.
            if hmac.compare_digest(given, expected):
                found = role
        return found

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def new_session(self, role: Role, *, now: float | None = None) -> str:
        """A signed cookie value for a new session of ``role``."""
        at = time.time() if now is None else now
        body = json.dumps(
            {"role": role.value, "exp": at + _SESSION_SECONDS, "sid": secrets.token_hex(16)}
        ).encode()
        encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded.encode())}"

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie value carries, or ``None`` (missing, forged, expired)."""
        if not cookie or "." not in cookie:
            return None
        encoded, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(encoded.encode()).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            session = Session(
                role=Role(data["role"]), expires=float(data["exp"]), sid=str(data["sid"])
            )
        except (ValueError, KeyError, TypeError):
            return None
        at = time.time() if now is None else now
        return session if session.expires > at else None

    def csrf_token(self, sid: str) -> str:
        """The CSRF token bound to session ``sid``."""
        return self._sign(f"csrf:{sid}".encode())

    def csrf_ok(self, sid: str, given: object) -> bool:
        """Whether ``given`` is the CSRF token of session ``sid`` (constant time)."""
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token(sid).encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> ASGIApp:
    from starlette.responses import JSONResponse  # noqa: PLC0415 - keeps the module light

    return JSONResponse({"error": message}, status_code=status, headers=headers)


class AuthMiddleware:
    """Reject every request without valid credentials; put the role in ``scope["state"]``.

    ``/api/`` and ``/metrics`` need a bearer token (401/403 as JSON); pages need a
    session cookie (a redirect to the login form). A read-only role gets 403 on
    any method but GET/HEAD.

    Args:
        app: the wrapped ASGI app.
        credentials: the configured tokens.
    """

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate one HTTP request; pass lifespan events through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = (
            scope["path"][len(scope.get("root_path", "")) :]
            if scope.get("root_path") and scope["path"].startswith(scope["root_path"])
            else scope["path"]
        )
        machine = path.startswith(("/api/", "/metrics")) or path in ("/api", "/metrics")
        state = scope.setdefault("state", {})
        if path in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        role: Role | None
        if machine:
            header = _header(scope, b"authorization") or ""
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                response = _json_error(
                    401,
                    "authentication required: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": 'Bearer realm="resilience"'},
                )
                await response(scope, receive, send)
                return
            role = self.credentials.role_of(token.strip())
            if role is None:
                response = _json_error(
                    401, "invalid token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                )
                await response(scope, receive, send)
                return
        else:
            session = self.credentials.session(_cookie(scope, SESSION_COOKIE))
            if session is None:
                from starlette.responses import RedirectResponse  # noqa: PLC0415

                root = scope.get("root_path", "")
                await RedirectResponse(f"{root}/login", status_code=303)(scope, receive, send)
                return
            role = session.role
            state["session"] = session
        writes = scope["method"] not in ("GET", "HEAD") and path not in _ANY_ROLE_POSTS
        if writes and role is not Role.OPERATOR:
            response = _json_error(403, "this token is read-only: changes need the operator token")
            await response(scope, receive, send)
            return
        state["role"] = role
        await self.app(scope, receive, send)
