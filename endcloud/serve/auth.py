"""Who is calling the chat server, and what they may reach: API keys, customer tokens, the admin.

    shop front end  Authorization: Bearer <one of api_keys>           may chat (anonymously)
    customer        Authorization: Bearer <customer token>, or        chats as that customer: their
                    X-Endcloud-Customer: <token> beside an API key     history, profile and orders
    admin           Authorization: Bearer <admin_token>, X-Endcloud-Admin-Token, or the cookie
                    `/review?token=…` sets; with no admin_token set: loopback clients only

A customer token is what the shop's own site signs for a logged-in customer (any language
can: see docs/architecture.md, "Security"):

    ect1.<base64url(customer id)>.<expiry, unix seconds>.<base64url(HMAC-SHA256(customer_secret, "ect1.<id>.<expiry>"))>

    token = sign_customer_token(secret, "alice", ttl_s=3600)     # or: endcloud serve token --customer alice
    verify_customer_token(secret, token) -> "alice"               # TokenError: malformed, forged or expired

Identity is only what a token proves: the request's `user` field is an opaque label (it
namespaces an anonymous chat's session and its rate limit, never loads a profile or a
history). Anonymous chats never share a session: each one without a session id gets a new,
unguessable id, and an anonymous caller may continue only a session that id names. Order
numbers of orders the caller does not own are withheld from the models (`withhold_orders`),
so neither the end model nor the cloud can look them up for someone else.

Every secret is compared with `hmac.compare_digest`; none is logged: `AdminQueryToken`
takes `?token=` out of the request before uvicorn's access log sees it and trades it for a
cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from starlette.responses import RedirectResponse

from endcloud.errors import ConfigError
from endcloud.serve.http import ApiError
from endcloud.serve.settings import MIN_SECRET_CHARS, is_loopback_host

TOKEN_PREFIX = "ect1"
CUSTOMER_HEADER = "x-endcloud-customer"
ADMIN_HEADER = "x-endcloud-admin-token"
ADMIN_COOKIE = "endcloud_admin"
MAX_TOKEN_CHARS = 1024
CUSTOMER_RE = re.compile(r"^[\w.@:+\-]{1,128}$")
ANONYMOUS = "anonymous"  # what the turn calls a caller without a customer token (reserved: no token names it)
# Owner of an anonymous chat's sessions in the store: "~" is no customer id's character, so an
# anonymous session can never be mistaken for (or continued by) a named customer's.
ANON_OWNER = "~anon"
WITHHELD_ORDER = "[order number withheld]"
# Request headers a reverse proxy adds: such a request came from elsewhere, whatever its socket says.
_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


class TokenError(ValueError):
    """A customer token that is malformed, forged or expired (the message says which)."""


# -- customer tokens -------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str) -> bytes:
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"the customer token secret must be at least {MIN_SECRET_CHARS} characters "
                          "(setting customer_secret, env ENDCLOUD_SERVE_CUSTOMER_SECRET; e.g. `openssl rand -hex 32`)")
    return secret.encode("utf-8")


def _signature(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def _check_customer_id(customer_id: str) -> None:
    if not isinstance(customer_id, str) or not CUSTOMER_RE.match(customer_id) or customer_id == ANONYMOUS:
        raise TokenError(f"customer id {str(customer_id)[:40]!r} must be 1-128 letters, digits or . _ @ : + - "
                         f"(and not {ANONYMOUS!r})")


def sign_customer_token(secret: str, customer_id: str, ttl_s: float, *, now: float | None = None) -> str:
    """A token proving `customer_id` to the server until `ttl_s` seconds from now."""
    _check_customer_id(customer_id)
    if not ttl_s or ttl_s <= 0:
        raise TokenError(f"ttl_s must be > 0, got {ttl_s!r}")
    expiry = int((time.time() if now is None else now) + ttl_s)
    body = f"{TOKEN_PREFIX}.{_b64(customer_id.encode('utf-8'))}.{expiry}"
    return f"{body}.{_signature(_key(secret), body)}"


def verify_customer_token(secret: str, token: str, *, now: float | None = None) -> str:
    """The customer id `token` proves; TokenError when it is malformed, forged or expired."""
    key = _key(secret)
    parts = token.split(".") if isinstance(token, str) and len(token) <= MAX_TOKEN_CHARS else []
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or not parts[2].isdigit() or not parts[2].isascii():
        raise TokenError(f"not a customer token (expected {TOKEN_PREFIX}.<id>.<expiry>.<signature>)")
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_signature(key, body).encode("ascii"), parts[3].encode("utf-8", "replace")):
        raise TokenError("bad signature (signed with another secret, or altered)")
    if int(parts[2]) <= (time.time() if now is None else now):
        raise TokenError("expired: the shop's site must sign a new one")
    try:
        customer = _unb64(parts[1]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise TokenError("the customer id is not base64url UTF-8") from None
    _check_customer_id(customer)
    return customer


# -- callers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """Who sent a chat or feedback request, as far as the server can tell."""

    customer: str | None = None  # proven by a customer token; None: anonymous
    frontend: bool = False  # presented one of the shop's API keys
    client: str = "?"  # the client's address
    label: str | None = None  # the request's `user`: an opaque label, never an identity

    @property
    def name(self) -> str:
        """The customer the turn serves: the proven id, or ANONYMOUS."""
        return self.customer if self.customer is not None else ANONYMOUS

    @property
    def owner(self) -> str:
        """Who owns this caller's sessions in the store."""
        if self.customer is not None:
            return self.customer
        return f"{ANON_OWNER}:{self.label}" if self.label else ANON_OWNER

    @property
    def rate_key(self) -> str:
        """The rate limiter's bucket: the customer; a front end's own label for its visitor; else the address."""
        if self.customer is not None:
            return f"customer:{self.customer}"
        if self.frontend and self.label:
            return f"frontend:{self.label}"
        return f"ip:{self.client}"

    def labelled(self, label: str | None) -> "Caller":
        return replace(self, label=label or None)


def is_anonymous_owner(owner: str | None) -> bool:
    return owner is not None and (owner == ANON_OWNER or owner.startswith(ANON_OWNER + ":"))


def issue_session_id() -> str:
    """A new anonymous session's id: 128 random bits, the only proof an anonymous caller has."""
    return "sess-" + secrets.token_hex(16)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def _unauthorized(message: str, *, status: int = 401, code: str = "unauthorized") -> ApiError:
    return ApiError(status, message, type="authentication_error" if status == 401 else "permission_error", code=code,
                    headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def authenticate(request: Request) -> Caller:
    """The caller of a chat/feedback request; 401 for a refused credential, or for no
    credential when the server has API keys (setting api_keys)."""
    s = request.app.state.settings
    client = request.client.host if request.client else "?"
    bearer = _bearer(request)
    token = request.headers.get(CUSTOMER_HEADER)
    frontend = False
    if bearer is not None:
        # every key is compared (no early exit), so the time taken says nothing about which matched
        if s.api_keys and any([_same(bearer, k) for k in s.api_keys]):
            frontend = True
        elif bearer.startswith(TOKEN_PREFIX + "."):
            token = token or bearer
        elif s.api_keys:
            raise _unauthorized("unknown API key (setting api_keys)", code="invalid_api_key")
        # no api_keys: an OpenAI client always sends some key; it proves nothing and is ignored
    customer = None
    if token is not None:
        if not s.customer_secret:
            raise _unauthorized("this server checks no customer tokens: set customer_secret "
                                "(env ENDCLOUD_SERVE_CUSTOMER_SECRET)", code="invalid_customer_token")
        try:
            customer = verify_customer_token(s.customer_secret, token.strip())
        except TokenError as e:
            raise _unauthorized(f"customer token refused: {e}", code="invalid_customer_token") from None
    if s.api_keys and not frontend and customer is None:
        raise _unauthorized("this server needs `Authorization: Bearer <API key>` (setting api_keys) or a customer token",
                            code="missing_credentials")
    return Caller(customer=customer, frontend=frontend, client=client)


# -- admin -----------------------------------------------------------------------------------
def is_loopback_request(request: Request) -> bool:
    """From this machine, and not relayed by a reverse proxy on it (which would make every visitor local)."""
    host = request.client.host if request.client else ""
    return bool(host) and is_loopback_host(host) and not any(h in request.headers for h in _FORWARDED)


def _admin_token(request: Request, token: str | None) -> str | None:
    if token:
        return token
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "admin_token", None)


def admin_cookie_value(token: str) -> str:
    """What the admin cookie holds: derived from the token, so the cookie jar never stores the token itself."""
    return hmac.new(token.encode("utf-8"), b"endcloud-admin-cookie", hashlib.sha256).hexdigest()


def has_admin_token(request: Request, token: str | None = None) -> bool:
    """Whether the request carries the admin token (header, bearer or cookie); False when none is set."""
    token = _admin_token(request, token)
    if not token:
        return False
    header, bearer = request.headers.get(ADMIN_HEADER), _bearer(request)
    cookie = request.cookies.get(ADMIN_COOKIE)
    return any([_same(header, token), _same(bearer, token), _same(cookie, admin_cookie_value(token))])


def is_admin(request: Request, token: str | None = None) -> bool:
    """Admin: the admin token when the server has one, else a loopback client."""
    if _admin_token(request, token):
        return has_admin_token(request, token)
    return is_loopback_request(request)


def require_admin(request: Request, token: str | None = None) -> None:
    """401/403 unless `is_admin` (`token`: a router's own admin token, else the app's setting)."""
    if is_admin(request, token):
        return
    if _admin_token(request, token):
        raise _unauthorized("this endpoint needs the admin token: `Authorization: Bearer <admin token>` or "
                            "X-Endcloud-Admin-Token (setting admin_token)")
    raise _unauthorized("admin endpoints serve only loopback clients while no admin token is set: pass --admin-token "
                        "or set ENDCLOUD_SERVE_ADMIN_TOKEN", status=403, code="admin_loopback_only")


def require_owner_or_admin(request: Request, owner: str | None) -> None:
    """Pass an admin, or the customer whose token names `owner`; else 401/404 (never says whether it exists)."""
    if is_admin(request):
        return
    caller = authenticate(request)
    if caller.customer is None:
        require_admin(request)  # raises: what to present
    if owner is None or owner != caller.customer:
        raise ApiError(404, "not found (or not yours)", code="not_found")


def require_metrics_reader(request: Request) -> None:
    """Prometheus on this machine scrapes freely; anyone else needs the admin token."""
    if is_loopback_request(request) or has_admin_token(request):
        return
    require_admin(request)


class AdminQueryToken:
    """ASGI middleware: `?token=` never reaches a log line or a page's address bar.

    The parameter is cut from the request in place (uvicorn's access log reads the same
    scope after the response); a GET carrying the right admin token is answered with a
    redirect to the same URL without it and a cookie (HttpOnly, SameSite=Strict) that
    stands for the token from then on."""

    def __init__(self, app, *, token_of=None):
        self.app = app
        self.token_of = token_of  # scope -> the admin token (default: the app's settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or b"token=" not in scope.get("query_string", b""):
            return await self.app(scope, receive, send)
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        given = next((v for k, v in pairs if k == "token"), None)
        if given is None:
            return await self.app(scope, receive, send)
        clean = urlencode([(k, v) for k, v in pairs if k != "token"]).encode("latin-1")
        scope["query_string"] = clean
        app = scope.get("app")
        token = self.token_of(scope) if self.token_of else getattr(getattr(getattr(app, "state", None), "settings", None),
                                                                   "admin_token", None)
        if token and scope.get("method") in ("GET", "HEAD") and _same(given, token):
            # relative to the page itself, so it holds behind a proxy's path prefix too
            location = (scope["path"].rsplit("/", 1)[-1] or ".") + ("?" + clean.decode("latin-1") if clean else "")
            resp = RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})
            resp.set_cookie(ADMIN_COOKIE, admin_cookie_value(token), path="/", httponly=True, samesite="strict",
                            secure=scope.get("scheme") == "https")
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


# -- orders ----------------------------------------------------------------------------------
def order_key(order_id: Any) -> str:
    """An order id as ownership compares it (NFKC, lower-case, no '#' or spaces around)."""
    return unicodedata.normalize("NFKC", str(order_id)).strip().lstrip("#").strip().lower()


def _mask(text: str, hidden: Iterable[str]) -> str:
    flat = unicodedata.normalize("NFKC", text)
    for oid in hidden:
        flat = re.sub(rf"(?<![A-Za-z0-9\-_]){re.escape(unicodedata.normalize('NFKC', oid))}(?![A-Za-z0-9\-_])",
                      WITHHELD_ORDER, flat, flags=re.IGNORECASE)
    return flat


def withhold_text(text: str, kb: Any, owned: set[str]) -> str:
    """`text` with each of the shop's order numbers that `owned` (order_key form) lacks replaced
    by WITHHELD_ORDER, so no model can look that order up for this caller."""
    orders_in = getattr(kb, "orders_in", None)
    if orders_in is None or not text:
        return text
    hidden = [o for o in orders_in(text) if order_key(o) not in owned]
    if not hidden:
        return text
    masked = _mask(text, hidden)
    if any(order_key(o) not in owned for o in orders_in(masked)):
        return WITHHELD_ORDER  # the id survived in a form the mask did not catch: drop the whole message
    return masked


def withhold_orders(messages: Sequence[dict[str, str]], kb: Any, owned: set[str]) -> list[dict[str, str]]:
    """`messages` with `withhold_text` applied to every content (new dicts where changed)."""
    out = []
    for m in messages:
        text = withhold_text(m["content"], kb, owned)
        out.append(m if text == m["content"] else {**m, "content": text})
    return out


def visible_snippets(snippets: Sequence[Any], owned: set[str]) -> list[Any]:
    """Knowledge snippets minus order rows of orders the caller does not own."""
    return [sn for sn in snippets if getattr(sn, "source", None) != "order" or order_key(getattr(sn, "ref", "")) in owned]


__all__ = [
    "ADMIN_COOKIE", "ADMIN_HEADER", "ANONYMOUS", "ANON_OWNER", "CUSTOMER_HEADER", "CUSTOMER_RE", "Caller", "AdminQueryToken",
    "TOKEN_PREFIX", "TokenError", "WITHHELD_ORDER", "authenticate", "has_admin_token", "is_admin", "is_anonymous_owner",
    "is_loopback_request", "issue_session_id", "order_key", "require_admin", "require_metrics_reader",
    "require_owner_or_admin", "sign_customer_token", "verify_customer_token", "visible_snippets", "withhold_orders",
    "withhold_text",
]
