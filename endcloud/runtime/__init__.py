"""Running the end model: one room for everything between a loaded model and a reply.

    protocol     ServedModel / SchedulableModel, Variant, Generation: what every engine offers
    engines      ENGINES (transformers, transformers-cb, vllm, sglang, llama-server, llamacpp) and
                 load_end_model(kind, ...)
    model        EndModel: the in-process transformers model, hot-swappable adapters (CPU or GPU)
    fastdecode   its lean decode path: fused weights, a static KV cache, one loop
    scheduler    Scheduler: continuous batching on that path (rows join and leave between steps)
    hfbatch      ContinuousHFModel: transformers' own continuous batching (other architectures, GPUs)
    prompts      prompts as token ids that continue each conversation's earlier ids
    vllm         VLLMEndModel: a shop-local vLLM server behind the same protocol
    openai_local SGLangEndModel, LlamaServerEndModel: the other shop-local servers (per-request LoRA)
    llamacpp     LlamaCppEndModel: llama.cpp over an exported GGUF file
    core         the engine core's loop: the running batch, fed from a queue
    batching     that loop in a thread of the server; whole batches for other engines
    worker       the same loop in its own process (no interpreter lock shared with HTTP)
    async_engine AsyncEngine: what the server awaits: batched, streamed, scored, hot-swapped

The room knows nothing of HTTP, routing or the online loop (`serve` and `evolve` call it,
never the other way round); making and versioning models is `endcloud.end`'s.
Importing it loads neither torch nor a model; `EndModel` and `AsyncEngine` import on use.
"""

from endcloud.runtime.engines import ENGINES, load_end_model
from endcloud.runtime.protocol import (Generation, SchedulableModel, ServedModel, Variant, check_generate_args,
                                       check_messages, schedulable)


def __getattr__(name: str):
    # the heavy halves on first use: EndModel pulls torch, AsyncEngine the batchers
    if name == "EndModel":
        from endcloud.runtime.model import EndModel

        return EndModel
    if name == "AsyncEngine":
        from endcloud.runtime.async_engine import AsyncEngine

        return AsyncEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENGINES", "AsyncEngine", "EndModel", "Generation", "SchedulableModel", "ServedModel", "Variant",
           "check_generate_args", "check_messages", "load_end_model", "schedulable"]
