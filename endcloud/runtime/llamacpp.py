"""The end model run by llama.cpp from a GGUF file: the `EndModel` surface, the fastest CPU path.

    m = LlamaCppEndModel.load("endcloud-work/base", "adapters/shop/v3", gguf_type="q8_0")
    [g] = m.generate([[{"role": "user", "content": "几天发货？"}]], seed=0)
    g.text, g.confidence          # reply, exp(mean token log-prob) in (0, 1]
    m.swap_adapter("adapters/shop/v4")   # re-export with v4 merged (cached), then swap
    m = LlamaCppEndModel.load("shop-q8_0.gguf")   # or serve a file `endcloud export gguf` wrote

Needs the optional extra `pip install 'endcloud[llamacpp]'` (llama-cpp-python, gguf-py).

Why: a decode step reads every weight once, so on a CPU its speed is bounded by memory
bandwidth ÷ weight bytes. llama.cpp's kernels read q8_0 (1.06 bytes/weight) close to that
bound, where torch's bf16/int8 mat-vec paths stay well below it (docs/bench/gguf.md).

How it is built: the llama.cpp model and context come from llama-cpp-python's low-level C
bindings (one context holds `max_batch` sequences); this module runs the loop. Batched:
all prompts are prefilled in one `llama_decode` (one sequence id per conversation, logits
only at each prompt's last token), then every step decodes one token per unfinished row.
Sampling is done here in numpy with the same rule as `fastdecode.sample` (temperature, then
top-p over the most likely 256 tokens, widened when they hold < top_p of the mass), and
the confidence is the same as EndModel's: exp(mean log-prob of the chosen tokens under the
unmodified distribution), the end-of-turn token included when the reply ended. numpy, not
torch, because torch's OpenMP workers spin after each op and would steal the cores
llama.cpp's threads are using.

Tokenization is the HF tokenizer's own (from the base directory, or rebuilt from the
`tokenizer.huggingface.json` our exporter stores in the GGUF file), so prompts are the very
token ids the model was trained on; truncation follows `EndModel.prompt_ids`.

Adapters: a LoRA adapter is merged into the weights at export (`end/gguf.py`) and the merged
file is cached (`cache_dir`, default ~/.cache/endcloud/gguf or $ENDCLOUD_GGUF_CACHE, keyed by
the base's and adapter's files, sizes and mtimes, and the type; the `CACHE_KEEP` most recently
used files stay, $ENDCLOUD_GGUF_CACHE_KEEP to change). llama.cpp could apply LoRA GGUF adapters at run time, but that costs extra
matmuls on every token; a merged file reads exactly the bytes of the base. `swap_adapter`
exports (or finds in the cache) and loads the new file, then swaps one reference: a call in
flight finishes on the model it started with. Prefix / P-tuning v2 adapters cannot be
expressed in GGUF: refused (serve them with the transformers engine).

A context is not thread-safe: generate calls on one model run one at a time (a lock);
serve them from one worker, or load one model per worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endcloud.end.gguf import EXTRA_HINT, GGUF_TYPES, HF_JSON_KEY, SOURCE_KEY
from endcloud.errors import ConfigError, DataError, ModelError
from endcloud.runtime.model import EndModel
from endcloud.runtime.protocol import Generation, Variant, VariantView, check_generate_args

log = logging.getLogger("endcloud.runtime.llamacpp")

ENV_CACHE = "ENDCLOUD_GGUF_CACHE"
ENV_EXTRA_BUFFERS = "ENDCLOUD_LLAMACPP_EXTRA_BUFFERS"  # "1": let llama.cpp use AMX / repacked weights
# top-p first looks at this many most likely tokens (as fastdecode.TOP_P_CANDIDATES).
TOP_P_CANDIDATES = 256
# Bump when the exporter's output changes, so cached files are rebuilt (2: an endcloud-trained
# tokenizer is exported as trained, see endcloud.end.base.load_tokenizer).
EXPORT_VERSION = 2
ENV_CACHE_KEEP = "ENDCLOUD_GGUF_CACHE_KEEP"
CACHE_KEEP = 4  # exported files kept in the cache (most recently used first); each is a whole model
STALE_PARTIAL_S = 3600.0  # an unfinished export this old was left by a crash
# Prefill is decoded in chunks of at most this many tokens (llama.cpp's n_batch / n_ubatch).
PREFILL_CHUNK = 512

_backend_lock = threading.Lock()
_backend_ready = False


def require_llama_cpp():
    """The `llama_cpp` module with its logging quietened, or a ModelError naming the extra."""
    global _backend_ready
    try:
        import llama_cpp
    except ImportError:
        raise ModelError(f"the llama.cpp engine needs llama-cpp-python; {EXTRA_HINT}") from None
    with _backend_lock:
        if not _backend_ready:
            # llama-cpp-python routes llama.cpp's log through this logger's level; loading a
            # model prints hundreds of lines otherwise.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


def default_cache_dir() -> Path:
    """$ENDCLOUD_GGUF_CACHE, else $XDG_CACHE_HOME/endcloud/gguf, else ~/.cache/endcloud/gguf."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "endcloud" / "gguf"


def _files_fingerprint(d: Path) -> list:
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in d.iterdir() if f.is_file())


def cached_export(base_dir: Path, adapter_dir: Path | None, gguf_type: str, cache_dir: Path) -> Path:
    """The GGUF file of base (+ merged adapter) in `gguf_type`, exported once into `cache_dir`."""
    from endcloud.end.gguf import export_gguf

    key = json.dumps({"v": EXPORT_VERSION, "base": str(base_dir.resolve()), "base_files": _files_fingerprint(base_dir),
                      "adapter": str(adapter_dir.resolve()) if adapter_dir else None,
                      "adapter_files": _files_fingerprint(adapter_dir) if adapter_dir else None, "type": gguf_type})
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    stem = base_dir.name + (f"+{adapter_dir.parent.name}-{adapter_dir.name}" if adapter_dir else "")
    path = cache_dir / f"{stem}-{gguf_type}-{digest}.gguf"
    if path.exists():  # export_gguf writes *.partial and renames: an existing file is complete
        os.utime(path)  # most recently used: the last that pruning removes
    else:
        log.info("exporting %s%s to %s", base_dir, f" + {adapter_dir}" if adapter_dir else "", path)
        export_gguf(base_dir, path, adapter_dir=adapter_dir, gguf_type=gguf_type)
        prune_cache(cache_dir, keep=_cache_keep())
    return path


def _cache_keep() -> int:
    raw = os.environ.get(ENV_CACHE_KEEP)
    if raw is None:
        return CACHE_KEEP
    try:
        keep = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_CACHE_KEEP}={raw!r} is not a whole number of files to keep") from None
    if keep < 1:
        raise ConfigError(f"{ENV_CACHE_KEEP} must be at least 1 (the file just exported), got {keep}")
    return keep


def prune_cache(cache_dir: Path, *, keep: int = CACHE_KEEP) -> list[Path]:
    """Delete all but the `keep` most recently used exports in `cache_dir`, and unfinished
    exports older than an hour; return what was deleted.

    Every adapter promoted under `serve --engine llamacpp` exports a whole model, so an
    unpruned cache grows by one model per promotion. A file a running server has loaded may
    be deleted: llama.cpp maps it, and the mapping outlives the name on POSIX systems."""
    import time

    files = sorted((p for p in Path(cache_dir).glob("*.gguf") if p.is_file()), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    now = time.time()
    stale = [p for p in Path(cache_dir).glob("*.partial") if now - p.stat().st_mtime > STALE_PARTIAL_S]
    gone = []
    for p in files[keep:] + stale:
        try:
            p.unlink()
            gone.append(p)
        except OSError as e:  # another process may be pruning too
            log.debug("could not delete %s: %s", p, e)
    if gone:
        log.info("pruned %d file(s) from the GGUF cache %s", len(gone), cache_dir)
    return gone


def tokenizer_from_gguf(path: Path):
    """The HF fast tokenizer our exporter stored in a GGUF file (special tokens and template included)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from endcloud.end.gguf import read_metadata

    meta = read_metadata(path, [HF_JSON_KEY, "tokenizer.chat_template", "tokenizer.ggml.eos_token_id",
                                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id"])
    if HF_JSON_KEY not in meta:
        raise ModelError(f"{str(path)!r} carries no {HF_JSON_KEY}: it was not written by `endcloud export gguf`; pass "
                         "tokenizer_dir=<the HF model dir it came from>")
    tok = Tokenizer.from_str(meta[HF_JSON_KEY])

    def name(key: str) -> str | None:
        return tok.id_to_token(int(meta[key])) if key in meta else None

    from endcloud.end.tokenizer import CHAT_TEMPLATE

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=name("tokenizer.ggml.eos_token_id"),
                                   bos_token=name("tokenizer.ggml.bos_token_id"),
                                   pad_token=name("tokenizer.ggml.padding_token_id") or name("tokenizer.ggml.eos_token_id"),
                                   chat_template=meta.get("tokenizer.chat_template") or CHAT_TEMPLATE,
                                   padding_side="left")


# ---- one loaded llama.cpp model + context --------------------------------------------------------
class _Runtime:
    """A llama.cpp model and a context of `n_seq` sequences × `seq_len` tokens; freed on close/GC."""

    def __init__(self, path: Path, *, n_seq: int, seq_len: int, threads: int):
        lc = require_llama_cpp()
        self.lc = lc
        self.path = path
        self.n_seq, self.seq_len, self.threads = n_seq, seq_len, threads
        self.lock = threading.Lock()  # a context runs one decode at a time
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = 0
        # llama.cpp's "extra" CPU buffer types (AMX tiles, repacked quant layouts) are off by
        # default: on this project's dev machine (AVX-512 + AMX under a VM) its AMX mat-mul
        # segfaults on any multi-token batch of a q8_0/q4_0 file. Opt in where it works.
        mp.use_extra_bufts = os.environ.get(ENV_EXTRA_BUFFERS, "") == "1"
        model = lc.llama_model_load_from_file(str(path).encode("utf-8"), mp)
        if not model:
            raise ModelError(f"llama.cpp cannot load {str(path)!r} (not a GGUF model file, or an architecture this "
                             "llama.cpp build does not know)")
        cp = lc.llama_context_default_params()
        cp.n_ctx = n_seq * seq_len
        cp.n_batch = cp.n_ubatch = max(PREFILL_CHUNK, n_seq)
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = threads
        cp.no_perf = True
        ctx = lc.llama_init_from_model(model, cp)
        if not ctx:
            lc.llama_model_free(model)
            raise ModelError(f"llama.cpp cannot create a context of {n_seq}×{seq_len} tokens for {str(path)!r}")
        self.model, self.ctx = model, ctx
        self.vocab = lc.llama_model_get_vocab(model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
        self.memory = lc.llama_get_memory(ctx)
        self.batch = lc.llama_batch_init(cp.n_batch, 0, 1)
        self._finalizer = weakref.finalize(self, _free, lc, model, ctx, self.batch)

    def close(self) -> None:
        self._finalizer()

    def set_threads(self, threads: int) -> None:
        self.lc.llama_set_n_threads(self.ctx, threads, threads)
        self.threads = threads

    def clear(self) -> None:
        self.lc.llama_memory_clear(self.memory, True)

    def decode(self, tokens: list[int], pos: list[int], seqs: list[int], want: list[bool]) -> np.ndarray:
        """One llama_decode; returns the logits (float32, len(rows wanted) × vocab) in batch order."""
        b = self.batch
        n = len(tokens)
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = pos[i]
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seqs[i]
            b.logits[i] = want[i]
        b.n_tokens = n
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc} (1: no room in the KV cache; -1: a batch llama.cpp "
                             "rejects, e.g. a sequence id beyond max_batch or a token id beyond the vocabulary)")
        idx = [i for i in range(n) if want[i]]
        out = np.empty((len(idx), self.n_vocab), dtype=np.float32)
        for j, i in enumerate(idx):
            ptr = self.lc.llama_get_logits_ith(self.ctx, i)
            out[j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return out


def _free(lc, model, ctx, batch) -> None:
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)


# ---- sampling (numpy, the rule of fastdecode.sample) --------------------------------------------
def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator):
    """Pick one token per row of `logits`; return (tokens, their log-prob under the raw distribution)."""
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
    if temperature <= 0:
        tok = logits.argmax(axis=-1)
    else:
        tok = np.empty(len(logits), dtype=np.int64)
        for r, row in enumerate(logits):
            scaled = row / np.float32(temperature)
            smax = scaled.max()
            p_all = np.exp(scaled - smax)
            z = p_all.sum()
            if top_p >= 1.0:
                tok[r] = rng.choice(len(row), p=p_all / z)
                continue
            k = min(TOP_P_CANDIDATES, len(row))
            while True:  # widen the candidates until they hold top_p of the mass
                idx = np.argpartition(-scaled, k - 1)[:k] if k < len(row) else np.arange(len(row))
                idx = idx[np.argsort(-scaled[idx], kind="stable")]
                probs = p_all[idx] / z
                cum = np.cumsum(probs)
                if k >= len(row) or cum[-1] >= top_p:
                    break
                k = min(k * 16, len(row))
            keep = (cum - probs) < top_p  # smallest prefix whose mass reaches top_p
            probs = probs * keep
            tok[r] = idx[rng.choice(len(idx), p=probs / probs.sum())]
    return tok, logits[np.arange(len(logits)), tok] - lse


@dataclass(frozen=True)
class _Loaded:
    """A variant's `handle` here: the llama.cpp runtime and the GGUF file it was loaded from."""

    gguf_path: Path
    rt: _Runtime


class LlamaCppEndModel(VariantView):
    """An end model served by llama.cpp from a GGUF file (`runtime.protocol.ServedModel`)."""

    _specials: Any = None  # EndModel.prompt fills it on first use
    _late_system: bool | None = None
    late_system = EndModel.late_system

    def __init__(self, *, gguf_path: Path | None, tokenizer, base_dir: Path | None = None, adapter_dir: Path | None = None,
                 gguf_type: str = "q8_0", cache_dir: Path | None = None, threads: int | None = None,
                 max_input_len: int = 256, max_new_tokens_limit: int = 512, max_batch: int = 8):
        if int(max_input_len) < 8:
            raise ConfigError(f"max_input_len must be at least 8 tokens, got {max_input_len!r}")
        if int(max_batch) < 1 or int(max_new_tokens_limit) < 1:
            raise ConfigError(f"max_batch and max_new_tokens_limit must be >= 1, got {max_batch!r}, "
                              f"{max_new_tokens_limit!r}")
        self.tokenizer = tokenizer
        self.base_dir = base_dir
        self.gguf_type = gguf_type
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.threads = int(threads or os.cpu_count() or 1)
        self.max_input_len = int(max_input_len)
        self.max_new_tokens_limit = int(max_new_tokens_limit)
        self.max_batch = int(max_batch)
        from endcloud.end.base import end_of_turn_ids

        self._stop_ids = set(end_of_turn_ids(tokenizer))
        self._swap_lock = threading.Lock()
        self._live = self._make_variant(gguf_path, adapter_dir)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, base, adapter_dir=None, *, gguf_type: str = "q8_0", cache_dir=None, threads: int | None = None,
             max_input_len: int = 256, max_new_tokens_limit: int = 512, max_batch: int = 8,
             tokenizer_dir=None) -> "LlamaCppEndModel":
        """Load a HF base dir (exported to GGUF `gguf_type` once, cached) + a LoRA adapter, or a .gguf file.

        A .gguf file is served as it is (its adapter, if any, was merged at export); its
        tokenizer comes from the file or from `tokenizer_dir`. max_batch conversations are
        decoded together (more are split into several batches); each holds at most
        max_input_len + max_new_tokens_limit tokens. threads: llama.cpp threads (all cores).
        """
        from endcloud.end.base import check_model_dir, load_tokenizer

        GGUF_TYPES.get(gguf_type)
        p = Path(base)
        common = dict(gguf_type=gguf_type, cache_dir=cache_dir, threads=threads, max_input_len=max_input_len,
                      max_new_tokens_limit=max_new_tokens_limit, max_batch=max_batch)
        if p.is_file():
            if adapter_dir is not None:
                raise ConfigError(f"{str(p)!r} is a GGUF file: an adapter must be merged at export "
                                  "(`endcloud export gguf --adapter ...`), or pass the HF base directory instead")
            tok = load_tokenizer(tokenizer_dir, padding_side="left") if tokenizer_dir else tokenizer_from_gguf(p)
            return cls(gguf_path=p, tokenizer=tok, **common)
        base_dir = check_model_dir(p)
        tok = load_tokenizer(base_dir, padding_side="left")
        return cls(gguf_path=None, tokenizer=tok, base_dir=base_dir,
                   adapter_dir=Path(adapter_dir) if adapter_dir is not None else None, **common)

    def _make_variant(self, gguf_path: Path | None, adapter_dir: Path | None) -> Variant:
        if gguf_path is None:
            if self.base_dir is None:
                raise ConfigError("this model was loaded from a GGUF file; adapters need the HF base: "
                                  "LlamaCppEndModel.load(<base dir>, adapter_dir)")
            gguf_path = cached_export(self.base_dir, adapter_dir, self.gguf_type, self.cache_dir)
        rt = _Runtime(Path(gguf_path), n_seq=self.max_batch, seq_len=self.max_input_len + self.max_new_tokens_limit,
                      threads=self.threads)
        base_name = self.base_dir.name if self.base_dir is not None else Path(gguf_path).stem
        name = base_name + (f"+{adapter_dir.parent.name}/{adapter_dir.name}" if adapter_dir else "")
        # no fast weights: the scheduler cannot step it, the engine batches it whole
        return Variant(name, adapter_dir, "base" if adapter_dir is None else "lora", handle=_Loaded(Path(gguf_path), rt))

    @property
    def variant(self) -> Variant:
        return self._live

    @property
    def gguf_path(self) -> Path:
        return self._live.handle.gguf_path

    def swap_adapter(self, adapter_dir) -> None:
        """Serve base + `adapter_dir` (a LoRA; None: the bare base) from now on; calls in flight finish first.

        Exports the merged GGUF (cached) and loads it before swapping; on failure the old
        model keeps serving."""
        with self._swap_lock:
            ad = Path(adapter_dir) if adapter_dir is not None else None
            self._live = self._make_variant(None, ad)  # one reference assignment; the old one is freed by GC

    def close(self) -> None:
        self._live.handle.rt.close()

    def __enter__(self) -> "LlamaCppEndModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- prompts (the tokenizer's own; EndModel's truncation rule) --------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict], *, system: str | None = None) -> list[int]:
        """Token ids of the prompt, truncated to max_input_len exactly as `EndModel.prompt_ids` does."""
        return EndModel.prompt(self, messages, system=system).ids  # type: ignore[arg-type]

    # ---- generation -------------------------------------------------------------------------
    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 128, temperature: float = 0.6,
                 top_p: float = 0.8, seed: int | None = None, system: str | None = None) -> list[Generation]:
        """One reply per conversation (OpenAI-style message lists), decoded max_batch at a time."""
        if not conversations:
            return []
        check_generate_args(max_new_tokens, temperature, top_p)
        if max_new_tokens > self.max_new_tokens_limit:
            raise DataError(f"max_new_tokens {max_new_tokens!r} exceeds this model's max_new_tokens_limit "
                            f"{self.max_new_tokens_limit}; load it with a larger max_new_tokens_limit")
        variant = self._live  # snapshot: a concurrent swap does not affect this call
        prompts = [self.prompt_ids(c, system=system) for c in conversations]
        # numpy takes no negative seed: a signed 64-bit seed maps onto [0, 2**64)
        rng = np.random.default_rng(seed % 2**64 if seed is not None else random.SystemRandom().randrange(2**63))
        out: list[Generation] = []
        rt = variant.handle.rt
        with rt.lock:
            for i in range(0, len(prompts), self.max_batch):
                seqs, lps, ended = self.decode(rt, prompts[i:i + self.max_batch], max_new_tokens=max_new_tokens,
                                               temperature=temperature, top_p=top_p, rng=rng)
                for toks, lp, end, prompt in zip(seqs, lps, ended, prompts[i:i + self.max_batch]):
                    text = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
                    n = len(toks) + (1 if end else 0)
                    mean = float(sum(lp) / n) if n else 0.0
                    out.append(Generation(text=text, confidence=math.exp(mean), tokens=len(toks), logprob=mean,
                                          finish_reason="stop" if end else "length", prompt_tokens=len(prompt),
                                          token_ids=list(toks), token_logprobs=[float(x) for x in lp[:len(toks)]]))
        return out

    def decode(self, rt: _Runtime, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
               rng: np.random.Generator, stop: bool = True):
        """Generate for up to max_batch prompts at once (caller holds rt.lock).

        Returns (token lists without the stop token, their log-prob lists including the stop
        token's, ended-with-stop flags), like `fastdecode.decode`. stop=False decodes exactly
        max_new_tokens (benchmarks)."""
        if len(prompts) > rt.n_seq:
            raise DataError(f"decode takes at most max_batch={rt.n_seq} prompts at once, got {len(prompts)}")
        rt.clear()
        logits = self._prefill(rt, prompts)
        b = len(prompts)
        toks: list[list[int]] = [[] for _ in range(b)]
        lps: list[list[float]] = [[] for _ in range(b)]
        ended = [False] * b
        live = list(range(b))  # rows still generating, in the order of `logits`
        pos = [len(p) for p in prompts]
        for step in range(max_new_tokens):
            tok, lp = sample(logits, temperature, top_p, rng)
            nxt = []
            for r, t, l in zip(live, tok.tolist(), lp.tolist()):
                lps[r].append(l)
                if stop and t in self._stop_ids:
                    ended[r] = True
                    continue
                toks[r].append(t)
                nxt.append((r, t))
            if not nxt or step == max_new_tokens - 1:
                break
            live = [r for r, _ in nxt]
            logits = rt.decode([t for _, t in nxt], [pos[r] for r in live], live, [True] * len(live))
            for r in live:
                pos[r] += 1
        return toks, lps, ended

    def _prefill(self, rt: _Runtime, prompts: list[list[int]]) -> np.ndarray:
        """Decode every prompt (rows packed into chunks of PREFILL_CHUNK tokens); logits after each."""
        last = np.empty((len(prompts), rt.n_vocab), dtype=np.float32)
        chunk: list[tuple[int, int, int]] = []  # (token, pos, row)
        wants: list[bool] = []

        def flush() -> None:
            if chunk:
                got = rt.decode([c[0] for c in chunk], [c[1] for c in chunk], [c[2] for c in chunk], wants)
                for j, r in enumerate(c[2] for c, w in zip(chunk, wants) if w):
                    last[r] = got[j]
                chunk.clear()
                wants.clear()

        n_batch = max(PREFILL_CHUNK, rt.n_seq)
        for r, p in enumerate(prompts):
            if not p:
                raise DataError("an empty prompt cannot be decoded")
            for i, t in enumerate(p):
                if len(chunk) == n_batch:
                    flush()
                chunk.append((t, i, r))
                wants.append(i == len(p) - 1)
        flush()
        return last

    def prompt_logits(self, ids: list[int]) -> np.ndarray:
        """Logits (float32, len(ids) × vocab) at every position of one sequence: for tests against HF."""
        rt = self._live.handle.rt
        with rt.lock:
            rt.clear()
            rows = []
            for i in range(0, len(ids), PREFILL_CHUNK):
                part = ids[i:i + PREFILL_CHUNK]
                rows.append(rt.decode(part, list(range(i, i + len(part))), [0] * len(part), [True] * len(part)))
            return np.concatenate(rows)


def source_of(path: str | os.PathLike[str]) -> dict:
    """What an exported GGUF file says it was made from (base name, adapter, type)."""
    from endcloud.end.gguf import read_metadata

    raw = read_metadata(path, [SOURCE_KEY]).get(SOURCE_KEY)
    return json.loads(raw) if raw else {}
