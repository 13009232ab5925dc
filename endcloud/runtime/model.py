"""The in-process end model: `EndModel` loads a transformers base (+ an optional peft adapter)
and answers many conversations at once, with a confidence for every reply. It is the
`"transformers"` entry of `runtime.ENGINES` and serves `runtime.protocol.SchedulableModel`.

    m = EndModel.load("models/base", "adapters/shop/v3")
    [g] = m.generate([[{"role": "user", "content": "几天发货？"}]], seed=0)
    g.text, g.confidence          # reply, exp(mean token log-prob) in (0, 1]
    m.swap_adapter("adapters/shop/v4")   # hot swap while other threads keep generating

How it is fast (numbers in docs/bench/end_decode.md and docs/bench/decode-speed.md):
transformers' `generate` spends most of its time per token outside the matmuls on small
models. Here a decode step is one lean function over the model's own weight tensors
(`fastdecode.py`): q/k/v and gate/up fused into one matmul each, fp32 weights laid out
input-major (the faster operand order for MKL here), ~15 small ops per layer on 2-D
activations (residuals inside addmm, rotary over the whole fused q|k|v row, k and v cached
in one copy), a pre-allocated KV cache per call, left-padded batched prefill with per-row
position ids, top-p on a small top-k slice, early exit when every row has ended.

Adapters become a `Variant` (`runtime.protocol`, immutable once built) and a swap is one
reference assignment, so a request in flight finishes on the variant it started with:
- LoRA is merged into private copies of only the weights it touches (the base tensors
  are shared and never written), so a LoRA reply costs the same as a base reply.
- Prefix tuning / P-tuning v2 (peft PrefixTuning with or without projection): the learned
  prefix is per-layer key/values, read once from peft (`get_prompt`) and copied into the
  front of every cache. Learned prefixes carry no rotary position; peft's forward puts the
  real tokens at positions P, P+1, ... after the P virtual tokens (right padding, or
  explicit position_ids which peft shifts by P). Rows here are left-padded for batching
  but every row gets exactly those positions, so output equals peft's own forward.

Models outside the Llama/Qwen2 family run the same loop through the transformers forward
(`HFRunner`), slower but correct; so does every model on a GPU (`device="cuda"`): the fast
path is laid out for the CPU's matmuls, while on a GPU the transformers forward already is
the fast path. There a reply batch is generated whole (static batching); the
`"transformers-cb"` engine (`runtime.hfbatch`) adds continuous batching and streaming for
base and LoRA variants. Prefix / P-tuning v2 adapters are served by this engine only.

Confidence is exp(mean log-prob of the chosen tokens under the unmodified (temperature 1,
no top-p) distribution). Why: the sampling-adjusted distribution depends on the request's
temperature/top_p and is renormalised over the nucleus, so it approaches 1 for any reply
once the nucleus is small; the raw distribution is the model's own belief, comparable
across requests, greedy or sampled, which is what the router's threshold needs.
The mean covers the reply's tokens plus the end-of-turn token when the reply ended.
"""

from __future__ import annotations

import copy
import math
import random
import threading
from pathlib import Path
from typing import Any

from endcloud.end.base import check_model_dir, end_of_turn_ids, load_base
from endcloud.errors import ModelError
from endcloud.runtime.protocol import Generation, Variant, VariantView, check_generate_args, check_messages

# Above this much weight on disk a base defaults to bf16: measured faster on this CPU (STACK-NOTES).
BF16_DEFAULT_BYTES = 400 * 2**20




def _parse_dtype(dtype: Any, base_dir: Path, device: Any = None):
    """The serving precision: `endcloud.end.device.resolve_dtype` (None/auto: bf16 or fp16 on a
    GPU; on the CPU bf16 above ~400 MB of weights, else fp32)."""
    import torch

    from endcloud.end.device import resolve_dtype
    from endcloud.errors import ConfigError

    size = sum(f.stat().st_size for f in base_dir.glob("*.safetensors")) + sum(
        f.stat().st_size for f in base_dir.glob("*.bin")
    )
    try:
        return resolve_dtype(dtype, device if device is not None else torch.device("cpu"),
                             cpu_default="bf16" if size > BF16_DEFAULT_BYTES else "fp32")
    except ConfigError as e:
        raise ModelError(str(e)) from None




def _shared_copy(model):
    """A structural copy of `model` whose parameters and buffers are the very same tensors."""
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        memo[id(t)] = t
    return copy.deepcopy(model, memo)


def _adapter_type(adapter_dir: Path) -> str:
    import json

    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.exists():
        raise ModelError(
            f"adapter directory {str(adapter_dir)!r} has no adapter_config.json: pass a folder written by peft "
            "save_pretrained (e.g. adapters/<name>/vN)"
        )
    try:
        return str(json.loads(cfg_path.read_text(encoding="utf-8"))["peft_type"]).upper()
    except (ValueError, KeyError) as e:
        raise ModelError(f"{str(cfg_path)!r} is not a valid peft adapter config: {e}") from e


def _prefix_kv(peft_model, dtype) -> tuple:
    """The learned prefix as per-layer (k, v), each (1, kv_heads, P, head_dim)."""
    import torch

    with torch.inference_mode():
        pkv = peft_model.get_prompt(batch_size=1)
    out = []
    if hasattr(pkv, "layers"):  # a transformers Cache
        for layer in pkv.layers:
            out.append((layer.keys.detach().to(dtype).clone(), layer.values.detach().to(dtype).clone()))
    else:  # legacy tuple of (k, v) or stacked [2, ...] per layer
        for kv in pkv:
            out.append((kv[0].detach().to(dtype).clone(), kv[1].detach().to(dtype).clone()))
    return tuple(out)


class EndModel(VariantView):
    """A loaded end model (base + optional adapter) that generates batched replies."""

    uses_torch_threads = True  # generation runs torch here: the serving engine sets its thread count

    def __init__(self, *, model, tokenizer, base_dir: Path, dtype, max_input_len: int = 256, fast: bool = True,
                 quant: str | None = None):
        self.tokenizer = tokenizer
        self.base_dir = Path(base_dir)
        self.dtype = dtype
        self.max_input_len = int(max_input_len)
        self._specials: Any = None  # the tokenizer's special tokens (prompts.Specials), on first use
        self._late_system: bool | None = None  # whether the template renders a system message mid-conversation
        self._base_model = model
        self._stop_ids = tuple(end_of_turn_ids(tokenizer))
        self._swap_lock = threading.Lock()
        from endcloud.runtime import fastdecode

        if quant not in (None, "int8"):
            raise ModelError(f"unknown quant {quant!r}; use None (the model's dtype) or 'int8' (weight-only)")
        self.quant = quant
        self._qcache: dict = {}  # quantized copies shared by the base and its LoRA variants
        self._full_fast = fastdecode.FastWeights.from_model(model) if fast else None
        self._base_fast = self._quantize(self._full_fast)
        self._variant = Variant(self.base_dir.name, None, "base", weights=self._base_fast, handle=model)

    def _quantize(self, fw, *, variant: bool = False):
        if fw is None or not self.quant:
            return fw
        # A variant reuses the base's quantized tensors but must not keep its own alive after a swap.
        return fw.quantized(self.quant, dict(self._qcache) if variant else self._qcache)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, base_dir, adapter_dir=None, *, dtype=None, max_input_len: int = 256, threads: int | None = None,
             fast: bool = True, quant: str | None = None, device=None,
             trust_remote_code: bool | None = None) -> "EndModel":
        """Load a local base model dir (+ a peft adapter dir).

        dtype None: bf16 above ~400 MB of weights (faster on CPU here), else fp32. fast=False
        runs the transformers forward (reference path). quant="int8": weight-only int8 linears
        on the fast path (half the bytes of bf16 per token; logits shift slightly; bf16
        activations unless dtype says otherwise). Measured fastest for 0.5B-sized bases.
        device None: $ENDCLOUD_DEVICE, else auto (`endcloud.end.device`); on a GPU the fast
        path is off (see the module docstring) and quant is refused.
        """
        import torch

        from endcloud.end.device import resolve_device

        if threads:
            torch.set_num_threads(int(threads))
        if int(max_input_len) < 8:
            raise ModelError(f"max_input_len must be at least 8 tokens, got {max_input_len!r}")
        base = check_model_dir(base_dir)
        dev = resolve_device(device)
        if dev.type != "cpu":
            if quant:
                raise ModelError(f"quant={quant!r} is the CPU fast path's weight-only int8; on {dev} serve the bf16 "
                                 "model (or an int8/4-bit model through vLLM or llama-server: docs/scale.md)")
            fast = False  # the fast path is the CPU's; on a GPU the transformers forward is the fast one
        # torch's int8 weight-only kernel is fast with bf16 activations, slow with fp32 (measured).
        dt = _parse_dtype("bf16" if dtype is None and quant == "int8" else dtype, base, dev)
        model, tok = load_base(base, dtype=dt, padding_side="left", device=dev, trust_remote_code=trust_remote_code)
        self = cls(model=model, tokenizer=tok, base_dir=base, dtype=dt, max_input_len=max_input_len, fast=fast,
                   quant=quant)
        if adapter_dir is not None:
            self.swap_adapter(adapter_dir)
        return self

    @property
    def variant(self) -> Variant:
        """What is served now (replaced as a whole by `swap_adapter`)."""
        return self._variant

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Token ids that end a reply (the tokenizer's end-of-turn and end-of-text tokens)."""
        return self._stop_ids

    def _build_variant(self, adapter_dir) -> Variant:
        import torch
        from peft import PeftModel

        if adapter_dir is None:
            return Variant(self.base_dir.name, None, "base", weights=self._base_fast, handle=self._base_model)
        ad = Path(adapter_dir)
        if not ad.is_dir():
            raise ModelError(f"adapter directory {str(ad)!r} does not exist")
        ptype = _adapter_type(ad)
        name = f"{self.base_dir.name}+{ad.parent.name}/{ad.name}"
        shell = _shared_copy(self._base_model)
        try:
            peft_model = PeftModel.from_pretrained(shell, str(ad), is_trainable=False)
        except Exception as e:  # peft raises many types for a mismatched adapter
            raise ModelError(f"cannot load the adapter {str(ad)!r} onto base {str(self.base_dir)!r}: {e}") from e
        peft_model.eval()
        from endcloud.runtime import fastdecode

        if ptype == "LORA":
            from peft.tuners.lora import LoraLayer

            # Merge into private copies of the touched weights only: the base stays untouched.
            for mod in peft_model.modules():
                if isinstance(mod, LoraLayer):
                    base_layer = mod.get_base_layer()
                    base_layer.weight = torch.nn.Parameter(base_layer.weight.detach().clone(), requires_grad=False)
            with torch.inference_mode():
                merged = peft_model.merge_and_unload()
            merged.eval()
            fw = fastdecode.FastWeights.from_model(merged, like=self._full_fast) if self._full_fast else None
            fw = self._quantize(fw, variant=True)
            return Variant(name, ad, "lora", weights=fw, handle=merged)
        if ptype == "PREFIX_TUNING":
            prefix = _prefix_kv(peft_model, self.dtype)
            return Variant(name, ad, "prefix", weights=self._base_fast, prefix=prefix, handle=self._base_model)
        raise ModelError(
            f"adapter {str(ad)!r} is of type {ptype!r}; the engine serves LORA and PREFIX_TUNING "
            "(prefix / ptuning-v2) adapters"
        )

    def load_variant(self, adapter_dir) -> Variant:
        """Build `adapter_dir`'s variant (None: the bare base) without serving it: a server
        that runs a canary or an A/B test passes it with each request of that arm. A LoRA
        variant holds private copies of the weights it touches only; the base is shared."""
        with self._swap_lock:
            return self._build_variant(adapter_dir)

    def swap_adapter(self, adapter_dir) -> None:
        """Serve `adapter_dir` (None: the bare base) from now on; calls in flight finish on the old one."""
        with self._swap_lock:  # one build at a time; generate never takes this lock
            variant = self._build_variant(adapter_dir)
            self._variant = variant  # a single reference assignment: atomic for readers

    # ---- prompts -------------------------------------------------------------------------
    def _encode(self, ids_text: str) -> list[int]:
        return list(self.tokenizer(ids_text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict], *, system: str | None = None) -> list[int]:
        """Token ids of the prompt for one conversation, truncated to max_input_len.

        Oldest turns go first, then the system message; the last user message is never
        dropped (if it alone is too long only its most recent tokens are kept).
        """
        return self.prompt(messages, system=system).ids

    def prompt(self, messages: list[dict], *, system: str | None = None, after: Any = None,
               trim_to: int | None = None) -> Any:
        """The prompt (`endcloud.runtime.prompts.Prompt`) for one conversation. `after`: a
        `Transcript` of this conversation's previous turn, whose ids it continues when it
        can (the server's prefix cache then holds every earlier id's key/values); `trim_to`:
        when turns must be dropped, drop them down to this many ids."""
        from endcloud.end.base import render_chat
        from endcloud.runtime.prompts import Specials, build_prompt

        msgs = check_messages(messages)
        if system is not None:
            msgs = [{"role": "system", "content": system}] + [m for m in msgs if m["role"] != "system"]
        if self._specials is None:
            self._specials = Specials.of(self.tokenizer)
        return build_prompt(msgs, render=lambda ms: render_chat(self.tokenizer, ms), encode=self._encode,
                            max_input_len=self.max_input_len, specials=self._specials, after=after, trim_to=trim_to,
                            late_system=self.late_system())

    def late_system(self) -> bool:
        """Whether the chat template renders a system message after other turns (ChatML,
        Qwen2.5 and Llama 3 do; some templates refuse anything but a leading system message).
        Where it does, the server puts a question's shop knowledge just before the question,
        so earlier turns keep their ids and the prefix cache keeps hitting."""
        if self._late_system is None:
            from endcloud.end.base import renders_late_system

            self._late_system = renders_late_system(self.tokenizer)
        return self._late_system

    # ---- generation ----------------------------------------------------------------------
    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None,
                 variant: Variant | None = None) -> list[Generation]:
        """One reply per conversation (OpenAI-style message lists), generated as one batch.
        `variant`: one built by `load_variant` (a canary's arm) instead of the served one."""
        if not conversations:
            return []
        check_generate_args(max_new_tokens, temperature, top_p)
        variant = variant or self._variant  # snapshot: a concurrent swap does not affect this call
        prompts = [self.prompt_ids(c, system=system) for c in conversations]
        seqs, lps, ended = self._run(variant, prompts, max_new_tokens, temperature, top_p, seed)
        out = []
        for toks, lp, end, prompt in zip(seqs, lps, ended, prompts):
            text = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
            n = len(toks) + (1 if end else 0)
            mean = float(sum(lp) / n) if n else 0.0
            out.append(Generation(text=text, confidence=math.exp(mean), tokens=len(toks), logprob=mean,
                                  finish_reason="stop" if end else "length", prompt_tokens=len(prompt),
                                  token_ids=list(toks), token_logprobs=[float(x) for x in lp[:len(toks)]]))
        return out

    def _run(self, variant: Variant, prompts: list[list[int]], max_new_tokens: int, temperature: float,
             top_p: float, seed: int | None):
        import torch

        from endcloud.runtime import fastdecode

        gen = torch.Generator().manual_seed(seed if seed is not None else random.SystemRandom().randrange(2**63))
        runner = (fastdecode.FastRunner(variant.weights, variant.prefix) if variant.weights is not None
                  else fastdecode.HFRunner(variant.handle, variant.prefix))
        return fastdecode.decode(runner, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 stop_ids=self.stop_ids, generator=gen, pad_id=self.tokenizer.pad_token_id or 0)

    def step_logits(self, prompts: list[list[int]], forced: list[list[int]], *, fast: bool | None = None):
        """Logits (float32) the cached decode path gives at every step when fed `forced` tokens.

        Returns a list (one per prompt) of (len(forced)+1, vocab) tensors: step 0 is the
        logits after the prompt. For tests that compare against a full forward without cache.
        """
        from endcloud.runtime import fastdecode

        v = self._variant
        use_fast = v.weights is not None if fast is None else fast
        runner = fastdecode.FastRunner(v.weights, v.prefix) if use_fast else fastdecode.HFRunner(v.handle, v.prefix)
        return fastdecode.forced_logits(runner, prompts, forced, pad_id=self.tokenizer.pad_token_id or 0)
