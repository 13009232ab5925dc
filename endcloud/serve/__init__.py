"""The shop's chat server (OpenAI-compatible): HTTP and the turn policy.

    from endcloud.serve import ServeSettings, create_app
    app = create_app(settings, engine=..., teacher=...)    # or endcloud.compose.build_app_from_workspace(ws)
    app.state.engine.swap_adapter("endcloud-work/adapters/shop/v3")   # hot swap, in-process

Modules: `app` (create_app and its lifespan), `routes` (the endpoints), `protocol`
(request schemas, completion body, SSE chunks), `http` (errors, body limit, rate limit),
`auth` (API keys, customer tokens, the admin token; who may reach which session, order, reply),
`turn` (one customer turn: context, end model, router, cloud, record), `router` (the pure
end/cloud decision), `signals` (frustration), `settings` (every knob), `metrics`
(Prometheus), `review` (the human review page and dashboard). Running the end model is
`endcloud.runtime`'s; building the server from a workspace is `endcloud.compose`'s.
Run it with `endcloud serve`.
"""

from endcloud.serve.router import MODELS, Decision, Router, Signals
from endcloud.serve.settings import MAX_BODY_BYTES, MAX_MESSAGES, MAX_TOKENS_PER_MESSAGE, RATE_LIMIT_PER_MINUTE, ServeSettings


def create_app(*args, **kwargs):
    """See `endcloud.serve.app.create_app` (imported lazily: FastAPI only when serving)."""
    from endcloud.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = [
    "MAX_BODY_BYTES", "MAX_MESSAGES", "MAX_TOKENS_PER_MESSAGE", "MODELS", "RATE_LIMIT_PER_MINUTE", "Decision", "Router",
    "ServeSettings", "Signals", "create_app",
]
