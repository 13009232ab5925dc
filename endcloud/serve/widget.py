"""The chat widget a shop embeds in its own site, served by the app, and the CORS that lets it.

    GET /widget.js    one script tag adds a chat box to any page of the shop:
                        <script src="https://chat.shop.example/widget.js" data-lang="zh"
                                data-token="ect1.…" async></script>
    GET /chat         the same chat box as a whole page (an iframe, or a link):
                        <iframe src="https://chat.shop.example/chat#lang=en&token=ect1.…"></iframe>

The widget streams replies from `/v1/chat/completions` (SSE), sends 👍/👎 and corrections to
`/v1/feedback`, speaks zh or en, and keeps the session id and the conversation in the
browser's localStorage, so a reload shows the history (for a named customer it re-reads the
session from the server, which is the record). Its options (`data-*` attributes, or the
`#…` part of /chat's URL, which never reaches a server log):

    token      a customer token the shop's site signed for the logged-in customer
               (`endcloud.serve.auth.sign_customer_token`); sent as the bearer, or as
               X-Endcloud-Customer beside an API key
    api-key    a key of setting api_keys (a browser shows it to anyone: prefer tokens)
    lang       zh | en (default: the browser's language)
    model      endcloud (default) | end | cloud
    server     the API's origin (default: where widget.js came from)
    title, open ("true": start open), mode (floating | inline)

The page that embeds the script is another origin than the API: the browser lets it call
the API only when setting `cors_origins` names that origin. Empty (the default) adds no CORS
headers at all: closed.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import Response

from endcloud.errors import ConfigError
from endcloud.serve.auth import CUSTOMER_HEADER
from endcloud.serve.protocol import SESSION_HEADER

# what the widget sends beyond the CORS-safelisted headers
ALLOWED_HEADERS = ("authorization", "content-type", CUSTOMER_HEADER, SESSION_HEADER)
# the shop's own site caches the script briefly: a new version reaches customers within minutes
WIDGET_CACHE = "public, max-age=300"


def _static(name: str) -> bytes:
    return resources.files("endcloud.serve").joinpath("static", name).read_bytes()


def cors_origins(settings: Any) -> list[str]:
    """Setting cors_origins, checked: each an origin (scheme://host[:port], no path) or "*"."""
    raw = getattr(settings, "cors_origins", ()) or ()
    if isinstance(raw, str):
        raw = raw.split(",")
    origins = [o.strip().rstrip("/") for o in raw if o and o.strip()]
    for o in origins:
        parts = urlsplit(o)
        if o != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query):
            raise ConfigError(f"serve setting cors_origins: {o!r} is not an origin like https://shop.example.com "
                              "(scheme and host, no path), nor \"*\" (env ENDCLOUD_SERVE_CORS_ORIGINS, comma-separated)")
    return origins


widget_router = APIRouter()


@widget_router.get("/widget.js", include_in_schema=False)
async def widget_js():
    return Response(_static("widget.js"), media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": WIDGET_CACHE})


@widget_router.get("/chat", include_in_schema=False)
async def chat_page():
    # the page may be framed by the shop's site (that is what it is for), never sniffed as something else
    return Response(_static("chat.html"), media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": WIDGET_CACHE, "X-Content-Type-Options": "nosniff",
                             "Referrer-Policy": "no-referrer"})


def install_widget(app: Any, settings: Any) -> None:
    """Mount the widget's routes and, when setting cors_origins names sites, the CORS layer
    (outermost, so a preflight never meets the auth or body checks)."""
    from fastapi.middleware.cors import CORSMiddleware

    origins = cors_origins(settings)
    app.include_router(widget_router)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=list(ALLOWED_HEADERS), allow_credentials=False, max_age=600)
