"""The shop's chat server (OpenAI-compatible): the end model answers, the cloud takes over.

    from endcloud.serve import ServeSettings, create_app, build_app_from_workspace
    app = build_app_from_workspace("endcloud-work")     # or create_app(settings, engine=..., teacher=...)
    app.state.engine.swap_adapter("endcloud-work/adapters/shop/v3")   # hot swap, in-process

Modules: `settings` (limits and thresholds), `signals` (frustration lexicon, lexical
matcher), `router` (the pure end/cloud decision), `core` (the engine core's loop: the
running batch, rows join and leave between decode steps), `batching` (that loop in a
thread of the server, tokens streamed to the event loop; a whole-batch batcher for vLLM
and other engines), `worker` (the same loop in its own process, so the model never waits
for the event loop's interpreter lock), `engine` (the end model
behind them, prompts that continue each conversation's ids, hot swap), `metrics`
(Prometheus), `app` (the FastAPI app), `workspace` (building it from a workspace).
Run it with `endcloud serve`.
"""

from endcloud.runtime.async_engine import AsyncEngine
from endcloud.serve.router import MODELS, Decision, Router, Signals
from endcloud.serve.settings import MAX_BODY_BYTES, MAX_MESSAGES, MAX_TOKENS_PER_MESSAGE, RATE_LIMIT_PER_MINUTE, ServeSettings


def create_app(*args, **kwargs):
    """See `endcloud.serve.app.create_app` (imported lazily: FastAPI only when serving)."""
    from endcloud.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def build_app_from_workspace(*args, **kwargs):
    """See `endcloud.serve.workspace.build_app_from_workspace`."""
    from endcloud.serve.workspace import build_app_from_workspace as _build

    return _build(*args, **kwargs)


__all__ = [
    "MAX_BODY_BYTES", "MAX_MESSAGES", "MAX_TOKENS_PER_MESSAGE", "MODELS", "RATE_LIMIT_PER_MINUTE", "Decision", "AsyncEngine",
    "Router", "ServeSettings", "Signals", "build_app_from_workspace", "create_app",
]
