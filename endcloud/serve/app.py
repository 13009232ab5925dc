"""The shop's chat server (OpenAI-compatible): the end model answers, the cloud takes over.

    app = create_app(ServeSettings(...), engine=AsyncEngine(EndModel.load(base)), teacher=make_teacher("openai"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

`create_app` wires the parts and the lifespan that loads what was not injected; the rest
of the room is one concern a module:

    http      OpenAI-shaped errors, body limit, rate limit, body parsing
    auth      who is calling: API keys, customer tokens, the admin token; orders only to their owner
    protocol  request schemas, the completion body, SSE chunks
    turn      one customer turn (`TurnService`): context, end model, router, cloud, record
    routes    the endpoints (module-level router)
    router    the pure end/cloud decision;  signals  frustration
    settings  every knob;  metrics  Prometheus;  review  the human review page and dashboard

Building the app from a workspace (base, adapters, shop, cloud, the online loop beside it)
is `endcloud.compose`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI

from endcloud.errors import ConfigError
from endcloud.runtime.async_engine import AsyncEngine
from endcloud.runtime.engines import needs_local_base
from endcloud.serve.auth import AdminQueryToken
from endcloud.serve.http import BodyLimit, LastResort, install_error_handlers
from endcloud.serve.metrics import Metrics
from endcloud.serve.routes import router
from endcloud.serve.settings import ServeSettings
from endcloud.serve.turn import TurnService
from endcloud.serve.widget import install_widget

log = logging.getLogger("endcloud.serve")


def create_app(settings: ServeSettings | None = None, *, engine: Any = None, teacher: Any = None, scorer: Any = None,
               kb: Any = None, store: Any = None, extra_routers: Sequence[APIRouter] = (), glue: Any = None,
               glue_labels: Sequence[tuple[list[dict[str, Any]], str]] = ()) -> FastAPI:
    """The FastAPI app. Parts not injected are built by the lifespan from `settings`:
    the engine from `base_dir`/`adapter_dir`, the store from `db_path` (in memory when None),
    the KB (and customer orders) from `shop_dir`; the matcher falls back to the "lexical"
    MATCHING scorer. `teacher=None` means no cloud: every turn is answered by the end model
    (and the routing decision still recorded). A remote teacher is wrapped in the privacy
    gate here. The novelty check's glue (`endcloud.scoring.novelty.Glue`), when not injected,
    is the base's glue.json merged with that of `glue_labels`, (turns, label) pairs of the
    workspace's teacher labels (`serve.grounding.serving_glue`)."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = app.state
        if st.engine is None:
            if settings.base_dir is None and needs_local_base(settings.engine):
                raise ConfigError(f"no end model: pass engine= or set base_dir (--base) for the {settings.engine} engine")
            st.engine = await asyncio.to_thread(AsyncEngine.load, settings.base_dir, settings.adapter_dir,
                                                kind=settings.engine, settings=settings)
            if settings.adapter_name:
                st.engine.adapter = settings.adapter_name
        if st.store is None:
            from endcloud.store.conversations import ConversationStore

            st.store = ConversationStore(settings.db_path or ":memory:")
            st.owns_store = True
        if st.kb is None and settings.shop_dir is not None:
            st.kb = await asyncio.to_thread(load_kb, settings.shop_dir, st.store)
        if st.glue is None and settings.novelty_check and st.kb is not None:
            from endcloud.serve.grounding import serving_glue

            st.glue = await asyncio.to_thread(serving_glue, settings.base_dir, st.kb, glue_labels,
                                              snippets=settings.knowledge_snippets or settings.grounding_snippets)
            if st.glue is not None:
                log.info("novelty check: %d glue fragments (%s)", len(st.glue), settings.base_dir)
        if st.scorer is None:
            from endcloud.scoring.matching import load_matching

            st.scorer = load_matching("lexical")
        st.engine.scorer = st.scorer
        st.engine.batcher.on_batch = lambda n, seconds: metrics.batch_size.observe(n)
        if st.engine.mode == "continuous":
            st.engine.batcher.on_step = metrics.batch_occupancy.observe
        st.service = TurnService(settings, engine=st.engine, teacher=st.teacher, scorer=st.scorer,
                                 kb=st.kb, store=st.store, metrics=metrics, glue=st.glue)
        st.engine.start()
        metrics.on_render.append(lambda: metrics.engine(st.engine.memory()))
        st.readiness = "warming_up"
        warm = asyncio.create_task(warm_up(app), name="endcloud-warm-up")
        stops = [stop for hook in st.startup_hooks if (stop := hook(app)) is not None]
        try:
            yield
        finally:
            st.readiness = "stopping"
            warm.cancel()
            for stop in stops:
                stop()
            # bounded: replies still in flight fail, and an engine process that does not stop is killed
            await st.engine.stop(timeout_s=settings.shutdown_timeout_s)
            await asyncio.to_thread(st.service.tracing.shutdown)  # the last turns' spans go out (telemetry)
            # The teacher's connections belong to this event loop: close them with it.
            aclose = getattr(st.teacher, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if st.owns_store:
                st.store.close()

    app = FastAPI(title="endcloud", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.openapi = lambda: openapi_schema(app)
    app.state.settings = settings
    app.state.readiness = "starting"  # -> warming_up -> ready -> stopping (GET /readyz)
    app.state.readiness_error = None
    app.state.engine = engine if engine is None or isinstance(engine, AsyncEngine) else AsyncEngine.from_settings(engine, settings)
    app.state.teacher = gate_teacher(teacher, settings)
    app.state.scorer = scorer
    app.state.kb = kb
    app.state.store = store
    app.state.glue = glue
    app.state.owns_store = False
    # callables hook(app) -> stop | None run once the engine is up (e.g. the adapter watcher)
    app.state.startup_hooks = []
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(LastResort)  # what escapes the handlers: clean JSON, the connection kept
    app.add_middleware(AdminQueryToken)  # outermost: `?token=` is gone before anything logs the URL
    app.include_router(router)
    install_widget(app, settings)  # GET /widget.js, /chat; CORS for the shop's site (setting cors_origins)
    for r in extra_routers:
        app.include_router(r)
    return app


async def warm_up(app: FastAPI) -> None:
    """Generate one token before the app says it is ready (`/readyz`): the continuous engine's
    first step starts its engine process, moves the weights in and allocates its pools, which
    no customer should wait for. Retried with backoff while it fails (the error is shown on
    /readyz). Engines batched whole are ready once started (setting warmup)."""
    st = app.state
    if not st.settings.warmup or st.engine.mode != "continuous":
        st.readiness = "ready"
        return
    delay = 0.5
    while True:
        try:
            await st.engine.generate([{"role": "user", "content": "hello"}], max_new_tokens=1, temperature=0.0, top_p=1.0)
        except Exception as e:  # noqa: BLE001 — not ready yet; /readyz says why
            st.readiness_error = f"{type(e).__name__}: {e}"[:300]
            log.warning("warm-up generation failed (retrying in %.1f s): %s", delay, st.readiness_error)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
            continue
        st.readiness, st.readiness_error = "ready", None
        return


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """/openapi.json as the server really behaves: the handlers read their bodies themselves
    (`http.parse_body`, for OpenAI-shaped 400s), so FastAPI sees neither the request schemas
    nor the errors; `protocol.REQUEST_BODIES` and `ERROR_STATUSES` say them, and a request
    the schema refuses is documented as the 400 it gets, never FastAPI's 422."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from endcloud.serve.protocol import ERROR_STATUSES, REQUEST_BODIES, STATUS_TEXT, ErrorBody

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (*REQUEST_BODIES.values(), ErrorBody):
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(js.pop("$defs", {}))
        components[model.__name__] = js

    def error(status: int) -> dict[str, Any]:
        return {"description": STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}

    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            statuses = set(ERROR_STATUSES.get((path, method), ())) | {500}
            if responses.pop("422", None) is not None:
                statuses.add(400)
            for status in sorted(statuses):
                responses.setdefault(str(status), error(status))
            model = REQUEST_BODIES.get((path, method))
            if model is not None:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def _is_gated(teacher: Any) -> bool:
    t = teacher
    while t is not None:
        if type(t).__name__ == "PrivacyGate":
            return True
        t = getattr(t, "inner", None)
    return False


def gate_teacher(teacher: Any, settings: ServeSettings) -> Any:
    """Wrap a remote teacher in the privacy gate unless it already passes through one."""
    if teacher is None or _is_gated(teacher) or not getattr(teacher, "remote", True):
        return teacher
    from endcloud.cloud import PrivacyGate  # lazy: only with a remote cloud
    from endcloud.privacy import AuditLog

    audit = settings.audit_path or (Path(settings.db_path).parent / "audit" / "outbound.jsonl" if settings.db_path else None)
    if audit is None:
        raise ConfigError("a remote cloud needs an audit log: set ServeSettings.audit_path (or db_path)")
    return PrivacyGate(teacher, audit=AuditLog(audit))


def load_kb(shop_dir: str | Path, store: Any = None):
    """KnowledgeBase of a shop pack; orders with a customer column become customer profiles."""
    from endcloud.kb import KnowledgeBase, ShopPack

    pack = ShopPack.load(shop_dir)
    if store is not None:
        orders = getattr(pack, "orders", None) or {}
        by_customer: dict[str, list[dict[str, Any]]] = {}
        for oid, row in orders.items():
            cust = row.get("customer") or row.get("customer_id") or row.get("user")
            if cust:
                by_customer.setdefault(cust, []).append({k: v for k, v in row.items() if k not in ("customer", "customer_id", "user")})
        for cust, rows in by_customer.items():
            store.set_profile(cust, orders=rows)
    return KnowledgeBase(pack)


__all__ = ["create_app", "gate_teacher", "load_kb"]
