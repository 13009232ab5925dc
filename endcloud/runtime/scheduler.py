"""Continuous (iteration-level) batching on the fast decode path: a running batch that
requests join and leave between decode steps.

`fastdecode.decode` runs a static batch: every row is prefilled together and the batch
decodes until its longest reply ends, so a request that arrives a moment later waits for
the whole batch, and a short reply keeps its row busy to the end. `Scheduler` instead keeps
a running batch and advances it one iteration at a time:

    add(req) ──► waiting ──admit──► prefill rows ──chunk by chunk──► decode rows ──► done
                 (FIFO)     │        (staging pool)   first token     (decode pool)   │
                            │                         sampled here    one token per   │
                            └─ prefix cache: KV of                    step(), rows    │
                               earlier prompts' blocks                leave at once ◄─┘

One `step()`: admit waiting requests into free rows (copying cached prefix blocks), then
one forward that carries a prefill chunk for the rows still reading their prompts (at most
`prefill_chunk` prompt tokens in all, so a long prompt does not stall everyone's decode for
long) together with one decode token for every row already generating. A row whose prompt
completes samples its first token in that step and decodes from the next; finished rows
leave at once and the next `step()` can admit a waiting request into their place. Each
row samples with its own settings (temperature, top_p, max_new_tokens) and its own
seedable `torch.Generator`, so a seeded reply does not depend on what else is in the
batch (`decode` shares one generator per call); greedy rows give exactly `decode`'s tokens.

Like `fastdecode`, the scheduler knows nothing about tokenization: token ids in, token ids
and their log-probs (under the raw distribution, as `EndModel` uses for confidence) out.

KV layout. Two pools of rows, each `(rows, 2 * kv_heads, cols, head_dim)` per layer (k
heads, then v heads); a row's column c holds the key/value of the token at position c,
so per-row lengths differ freely:

    | learned prefix (P) | prompt ... | generated ... | stale (masked) |
      cols 0..P-1          P..P+n-1     P+n, ...

The decode pool keeps its live rows in `[0, n)` (a leaving row is replaced by the last
one, one copy of its columns), so a decode step works on views, never on gathered copies.
Prompts are prefilled in a separate staging pool and copied over once complete. A new
token's key and value are written at its row's own column with one `index_put_` per
layer; attention masks every column beyond the row's length, so stale values from an
earlier occupant are never read (pools start zeroed: a masked value must be finite).
Tokens run packed: the decode rows' tokens and the real prompt tokens of the joining rows
as one (tokens, hidden) batch through the linears and MLP; only attention works per pool,
with the prompt tokens padded to (rows, chunk) there. Sharing the forward matters on a
CPU: a prefill chunk alone cost ~1.5 ms of fixed overhead (its ~100 torch calls) on top of
its tokens, and the decode step read the same weights again.

Prefix tuning / P-tuning v2: the learned prefix key/values sit in columns [0, P) of every
row and tokens start at position P, as in `FastRunner` (peft's own forward), so prefix
adapters are served here natively. LoRA is merged into the weights and needs nothing.

Prefix caching (`PrefixCache`): prompts that share a beginning (a system prompt, the
shop's knowledge, a customer's earlier turns) reuse the key/values computed the first
time, in blocks of `BLOCK` tokens keyed by a hash chain over the token ids (vLLM's
automatic prefix caching, on CPU tensors, LRU within a byte budget). A hit is always at
least one token short of the prompt: the last prompt token is computed to get its logits.

    st = Scheduler(FastWeights.from_model(model), stop_ids=[eos], max_batch=16)
    st.add(StepRequest(prompt_ids, max_new_tokens=64, temperature=0.6, top_p=0.8, seed=1))
    while st.busy:
        for ev in st.step():   # (request, token or None at a stop, finished?)
            ...
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from endcloud.runtime.fastdecode import TOP_P_CANDIDATES, FastWeights, _mm, _mm_add, _rms
from endcloud.runtime.protocol import SEED_MAX, SEED_MIN

BLOCK = 16  # prefix-cache granularity in tokens (vLLM's default block size)
# top-p sorts whole rows (numpy) up to this vocabulary, above it top-k first as `sample`:
# numpy's sort of 16 x 466 took 0.12 ms vs torch topk 0.31 + sort 0.42; at 8000, 3.0 vs topk 1.5
SORT_VOCAB = 2048
# top-p looks at this many most likely tokens first; rows whose nucleus is wider go on to
# TOP_P_CANDIDATES (same draws either way: see _nucleus_head)
FIRST_CANDIDATES = 32
PREFILL_CHUNK = 512  # prompt tokens prefilled per iteration across all joining rows
_MIN_CHUNK = BLOCK  # the least a joining row advances per iteration when many share the chunk
_GROW = 128  # pools grow their columns in steps of this many (a multiple of BLOCK)


# ---------------------------------------------------------------------------------------
# requests
@dataclass(eq=False)
class StepRequest:
    """One reply to generate. The scheduler fills the result fields as it goes."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    tag: Any = None  # the caller's handle (the scheduler never reads it)
    meta: Any = None  # the caller's data about the request (the scheduler never reads it)
    # -- results --
    tokens: list[int] = field(default_factory=list)  # generated ids, without the stop token
    logprobs: list[float] = field(default_factory=list)  # per sampled token, the stop token's included
    ended: bool = False  # ended with a stop token (else it ran out of max_new_tokens or was cancelled)
    done: bool = False
    cancelled: bool = False
    cached_tokens: int = 0  # prompt tokens whose key/values came from the prefix cache

    def cancel(self) -> None:
        """Stop generating for this request at the next step (safe from another thread)."""
        self.cancelled = True


class StepEvent(NamedTuple):
    """What one step did to one request: `token` is None when it was a stop token."""

    request: StepRequest
    token: int | None
    finished: bool


class _Part(NamedTuple):
    """One pool's rows in a forward: ids (b, q) at columns (b, q), keys [0, span); row j's
    first `lens[j]` queries are real (None: all of them, as in a decode step)."""

    pool: Any
    ids: torch.Tensor
    cols: torch.Tensor
    span: int
    lens: list[int] | None = None


class _Chunk(NamedTuple):
    """A prefill chunk: its part, tokens per row, the rows whose prompt it completes, and the
    packed index (within the chunk) of each such row's last prompt token."""

    part: _Part
    lens: list[int]
    done: list[int]
    out: torch.Tensor


@dataclass
class StepStats:
    """Counters since the scheduler was built (read them for metrics and benchmarks)."""

    steps: int = 0  # decode steps
    rows: int = 0  # sum over decode steps of the rows in the step (occupancy = rows / steps)
    prefills: int = 0  # prefill forwards (chunks)
    prefill_tokens: int = 0  # prompt tokens computed
    prefill_padded: int = 0  # query positions the prefill forwards ran (tokens + right padding)
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    admitted: int = 0
    finished: int = 0
    mixed: int = 0  # steps whose prefill chunk rode the decode step's forward
    prefill_seconds: float = 0.0  # wall time in prefill-only steps (forward + first-token sampling + copies)
    decode_seconds: float = 0.0  # wall time in decode-only steps (forward + sampling + leaving rows)
    mixed_seconds: float = 0.0  # wall time in steps that prefilled and decoded in one forward

    @property
    def occupancy(self) -> float:
        return self.rows / self.steps if self.steps else 0.0


class _Row:
    __slots__ = ("req", "gen", "ids", "filled", "todo", "last", "sampled")

    def __init__(self, req: StepRequest, gen: torch.Generator | None, filled: int, todo: int):
        self.req, self.gen = req, gen
        # what is prefilled: the prompt, or (a request resumed after a failed step) the
        # prompt and the tokens it had generated, so its reply goes on where it stopped
        self.ids = req.prompt + req.tokens if req.tokens else req.prompt
        self.filled = filled  # columns holding valid key/values (learned prefix included)
        self.todo = todo  # index of the first token of `ids` not yet prefilled
        self.last = -1  # the last sampled token (fed at the next decode step)
        self.sampled = len(req.tokens)  # tokens sampled so far


# ---------------------------------------------------------------------------------------
# KV pools
class _Pool:
    """`rows` KV-cache rows per layer, zero-initialised, whose columns grow on demand.

    A layer is one tensor (rows, 2 * kv_heads, cols, head_dim): its k heads then its v
    heads, side by side as they leave the fused q|k|v matmul, so one write stores both."""

    def __init__(self, w: FastWeights, rows: int, prefix):
        self.w, self.rows, self.prefix = w, rows, prefix
        self.plen = 0 if prefix is None else int(prefix[0][0].shape[2])
        self.cols = 0
        self.kv: list[torch.Tensor] = []
        self.ensure(self.plen + _GROW)

    def ensure(self, cols: int) -> None:
        if cols <= self.cols:
            return
        new = max(cols, self.cols * 2)
        new = -(-new // _GROW) * _GROW
        w = self.w
        kvs = []
        for i in range(len(w.layers)):
            kv = torch.zeros((self.rows, 2 * w.n_kv, new, w.head_dim), dtype=w.dtype)
            if self.cols:
                kv[:, :, : self.cols] = self.kv[i]
            elif self.prefix is not None:
                pk, pv = self.prefix[i]
                kv[:, : w.n_kv, : self.plen] = pk
                kv[:, w.n_kv:, : self.plen] = pv
            kvs.append(kv)
        self.kv, self.cols = kvs, new

    def copy_row(self, src: "_Pool", s: int, d: int, n: int) -> None:
        """Columns [0, n) of row `s` of `src` into row `d` of this pool."""
        if src is self and s == d:
            return
        for dst, sk in zip(self.kv, src.kv):
            dst[d, :, :n] = sk[s, :, :n]


# ---------------------------------------------------------------------------------------
# prefix cache
class PrefixCache:
    """Key/values of earlier prompts in blocks of `BLOCK` tokens, looked up by a hash chain.

    Block i of a sequence is keyed by blake2b(key of block i-1 + its token ids), so a key
    names the block *and everything before it*: a hit on block i means the first
    (i+1)*BLOCK tokens are the same. Each block holds a (layers, 2 * kv_heads, BLOCK,
    head_dim) tensor (k heads, then v heads); least recently used blocks are dropped
    beyond `max_bytes`.
    A cache belongs to one set of weights (and learned prefix): build a new one on a swap.

    The blocks live in one slab, `max_bytes` of them allocated at the first `put` (the
    pages are taken as blocks are first written), and a block dropped gives its row to the
    next. Each block its own tensor instead cost an engine process under load twice the
    budget and still growing (measured): the heap fragments between 64 KB blocks freed in
    LRU order and the large temporaries of prefill. A block `match` returns is a view of the
    slab, valid until the next `put`.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0  # bytes of the blocks held (the slab's pages in use)
        self._slots: OrderedDict[bytes, int] = OrderedDict()  # key -> row of the slab, least recently used first
        self._free: list[int] = []
        self._slab: torch.Tensor | None = None  # (rows, *block shape), made at the first put
        self._block_bytes = 0
        self.hits = self.lookups = 0

    def __len__(self) -> int:
        return len(self._slots)

    @staticmethod
    def keys(tokens: list[int], n_blocks: int) -> list[bytes]:
        out, prev = [], b""
        for i in range(n_blocks):
            prev = hashlib.blake2b(prev + array("q", tokens[i * BLOCK:(i + 1) * BLOCK]).tobytes(),
                                   digest_size=16).digest()
            out.append(prev)
        return out

    def match(self, tokens: list[int]) -> tuple[list[bytes], list[torch.Tensor]]:
        """(keys, blocks) of the longest cached beginning of `tokens`, leaving >= 1 token to compute."""
        self.lookups += 1
        keys = self.keys(tokens, (len(tokens) - 1) // BLOCK)
        found = []
        for k in keys:
            row = self._slots.get(k)
            if row is None:
                break
            self._slots.move_to_end(k)
            found.append(self._slab[row])
        if found:
            self.hits += 1
        return keys[: len(found)], found

    def put(self, key: bytes, block: torch.Tensor) -> None:
        """Copy `block` in under `key` (dropping the least recently used when full)."""
        if key in self._slots or self.max_bytes <= 0:
            return
        if self._slab is None:
            size = block.numel() * block.element_size()
            rows = self.max_bytes // size if size else 0
            if rows < 1:
                return
            self._slab = torch.empty((rows, *block.shape), dtype=block.dtype)  # untouched pages cost nothing yet
            self._block_bytes = size
            self._free = list(range(rows - 1, -1, -1))
        elif block.shape != self._slab.shape[1:] or block.dtype != self._slab.dtype:
            return  # not a block of this cache's weights
        if self._free:
            row = self._free.pop()
        else:
            _, row = self._slots.popitem(last=False)
            self.bytes -= self._block_bytes
        self._slab[row].copy_(block)
        self._slots[key] = row
        self.bytes += self._block_bytes

    def __contains__(self, key: bytes) -> bool:
        return key in self._slots


# ---------------------------------------------------------------------------------------
# sampling
def _draw(probs: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """One index per row of `probs` (n, k), row i drawn with `gens[i]`.

    This is torch's own CPU `multinomial(p, 1)` (Gumbel-max: argmax(p / q), q ~ Exp(1)
    drawn as `exponential_` over the row), spelled out so that each row draws from its own
    generator while the division and argmax run once for all rows, and without the
    validity checks (each a sync) multinomial runs per call. The draws are the ones
    `multinomial` makes for that row alone, so a seeded row gets `fastdecode.sample`'s token.
    Rows that share a generator (unseeded requests) draw in one call.
    """
    q = torch.empty_like(probs)
    if len(gens) > 1 and all(g is gens[0] for g in gens):
        q.exponential_(1, generator=gens[0])
    else:
        for i, g in enumerate(gens):
            q[i].exponential_(1, generator=g)
    return (probs / q).argmax(dim=-1)


def _nucleus_small_vocab(scaled: torch.Tensor, lse: torch.Tensor, top_p: float, gens: list[torch.Generator]):
    """Top-p draws for a vocabulary small enough to sort whole (<= SORT_VOCAB): one sort
    (numpy's: several times faster than torch.sort or torch.topk on rows this short, and
    the same order for distinct values) gives every candidate set `sample` widens through
    (256, 4096, ... tokens); each row draws from the first that holds top_p, as there."""
    vocab = scaled.shape[-1]
    order = torch.from_numpy(np.argsort(-scaled.numpy(), axis=-1))
    probs = torch.exp(scaled.gather(-1, order).sub_(lse))
    cum = probs.cumsum(-1)
    ks, k = [], min(TOP_P_CANDIDATES, vocab)
    while True:
        ks.append(k)
        if k >= vocab:
            break
        k = min(k * 16, vocab)
    if len(ks) == 1:
        pick = ks
    else:
        masses = cum[:, [k - 1 for k in ks]].tolist()
        pick = [next((k for k, m in zip(ks, row) if m >= top_p or k >= vocab), vocab) for row in masses]
    if len(set(pick)) == 1:  # the usual case: every row draws from the same candidates
        k = pick[0]
        pr, cu = probs[:, :k], cum[:, :k]
        choice = _draw(pr * ((cu - pr) < top_p), gens)  # smallest prefix whose mass reaches top_p
        return order[:, :k].gather(-1, choice[:, None])[:, 0]
    toks = torch.empty(len(gens), dtype=torch.long)
    for k in sorted(set(pick)):
        rows = [i for i, kk in enumerate(pick) if kk == k]
        pr, cu = probs[rows, :k], cum[rows, :k]
        choice = _draw(pr * ((cu - pr) < top_p), [gens[i] for i in rows])
        toks[rows] = order[rows, :k].gather(-1, choice[:, None])[:, 0]
    return toks


def sample_rows(logits: torch.Tensor, rows: list[_Row]) -> tuple[list[int], list[float]]:
    """One token per row with that row's settings and generator; log-probs under the raw
    distribution. Per row this is `fastdecode.sample` on that row alone (same candidates,
    same generator draws; ties between equal logits aside), with the shared work
    (log-softmax, sorting, argmax) batched."""
    logp = torch.log_softmax(logits, dim=-1)
    groups: dict[tuple[float, float], list[int]] = {}
    for i, r in enumerate(rows):
        if r.req.temperature > 0:
            groups.setdefault((r.req.temperature, r.req.top_p), []).append(i)
    whole = len(groups) == 1 and len(next(iter(groups.values()))) == len(rows)
    toks = None if whole else logits.argmax(dim=-1)  # greedy rows (all rows when none samples)
    for (temperature, top_p), idx in groups.items():
        scaled = (logits if whole else logits[idx]) / temperature
        gens = [rows[i].gen for i in idx]
        exact = any(rows[i].req.seed is not None for i in idx)  # seeded rows draw exactly as `sample`
        if top_p >= 1.0:
            got = _draw(torch.softmax(scaled, -1), gens)
        elif scaled.shape[-1] <= SORT_VOCAB:
            got = _nucleus_small_vocab(scaled, torch.logsumexp(scaled, dim=-1, keepdim=True), top_p, gens)
        else:
            got = _nucleus_topk(scaled, top_p, gens, exact=exact)
        if whole:
            toks = got
        else:
            toks[idx] = got
    lps = logp.gather(-1, toks[:, None])[:, 0]
    return toks.tolist(), lps.tolist()


def _nucleus_topk(scaled: torch.Tensor, top_p: float, gens: list[torch.Generator], *, exact: bool = True) -> torch.Tensor:
    """Top-p draws for a large vocabulary, as `sample`: the TOP_P_CANDIDATES most likely
    first, widened (x16) for the rows whose candidates hold less than top_p. `exact=False`
    (no row is seeded, so no draw is promised) lets the first candidates draw over their own
    width: an eighth of the exponential draws."""
    lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
    vocab = scaled.shape[-1]
    toks = torch.empty(len(gens), dtype=torch.long)
    k = min(TOP_P_CANDIDATES, vocab)
    todo = list(range(len(gens)))  # rows still to sample
    if FIRST_CANDIDATES < k:
        todo = _nucleus_head(scaled, lse, top_p, gens, k if exact else FIRST_CANDIDATES, toks)
    while todo:
        whole = len(todo) == len(gens)
        sub = scaled if whole else scaled[todo]
        if k >= vocab:
            vals, cand = torch.sort(sub, dim=-1, descending=True)
        else:
            vals, cand = torch.topk(sub, k, dim=-1)  # sorted, most likely first
        probs = torch.exp(vals - (lse if whole else lse[todo]))
        cum = probs.cumsum(-1)
        short = (cum[:, -1] < top_p).tolist() if k < vocab else [False] * len(todo)
        ok = [j for j, sh in enumerate(short) if not sh]
        if ok:
            probs = probs * ((cum - probs) < top_p)  # smallest prefix whose mass reaches top_p
            if len(ok) < len(todo):
                probs, cand = probs[ok], cand[ok]
            choice = _draw(probs, [gens[todo[j]] for j in ok])
            toks[[todo[j] for j in ok]] = cand.gather(-1, choice[:, None])[:, 0]
        todo = [p for p, sh in zip(todo, short) if sh]
        k = min(k * 16, vocab)
    return toks


def _nucleus_head(scaled: torch.Tensor, lse: torch.Tensor, top_p: float, gens: list[torch.Generator], k: int,
                  toks: torch.Tensor) -> list[int]:
    """Draw, into `toks`, every row whose nucleus lies within its FIRST_CANDIDATES most likely
    tokens (a trained model's usually does); return the rows left for the full candidate set.

    Exactly `sample`'s draw over its `k` candidates: there, candidates past the nucleus have
    their probability masked to 0 and can never win argmax(p / q), so only the nucleus's
    order matters, and the exponential draws q still cover all `k` positions (zero-padded
    here) so each row's generator advances as it would. A top-32 costs a third of a top-256
    on a 4,000-token vocabulary (0.34 vs 1.0 ms for 15 rows), 7.8 vs 10.9 ms at 151k."""
    vals, cand = torch.topk(scaled, FIRST_CANDIDATES, dim=-1)
    probs = torch.exp(vals - lse)
    cum = probs.cumsum(-1)
    inside = (cum[:, -1] >= top_p).tolist()
    ok = [i for i, y in enumerate(inside) if y]
    if not ok:
        return list(range(len(gens)))
    probs = probs * ((cum - probs) < top_p)
    if len(ok) < len(gens):
        probs, cand = probs[ok], cand[ok]
    if k > FIRST_CANDIDATES:
        padded = probs.new_zeros((len(ok), k))
        padded[:, :FIRST_CANDIDATES] = probs
        probs = padded
    choice = _draw(probs, [gens[i] for i in ok])
    toks[ok] = cand.gather(-1, choice[:, None])[:, 0]
    return [i for i, y in enumerate(inside) if not y]


# ---------------------------------------------------------------------------------------
# the scheduler
class Scheduler:
    """A running batch over `FastWeights`: `add` requests, call `step()` while `busy`.

    Not thread-safe: one thread owns a scheduler (the serving engine's worker). `cancel`
    on a request is the one call another thread may make.
    """

    def __init__(self, weights: FastWeights, *, stop_ids, prefix=None, max_batch: int = 16, max_len: int = 2048,
                 prefill_chunk: int = PREFILL_CHUNK, prefix_cache: PrefixCache | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk!r}")
        self.w = weights
        self.prefix = prefix
        self.stop = frozenset(int(s) for s in stop_ids)
        self.max_batch = int(max_batch)
        self.prefill_chunk = int(prefill_chunk)
        self.cache = prefix_cache
        self.dec = _Pool(weights, self.max_batch, prefix)
        self.stage = _Pool(weights, self.max_batch, prefix)
        self.plen = self.dec.plen
        self.max_len = int(max_len)  # positions a row may use, learned prefix included
        self.vocab = int(weights.embed.shape[0])
        # a prefill chunk's pad queries may run up to one chunk past a row's end
        room = self.max_len + max(self.prefill_chunk, _MIN_CHUNK) + BLOCK
        self.waiting: list[StepRequest] = []
        self.decoding: list[_Row] = []  # rows [0, n) of the decode pool
        self.prefilling: list[_Row] = []  # rows [0, n) of the staging pool
        self.stats = StepStats()
        self.last_events: list[StepEvent] = []  # what the latest step() did, also when it raised
        self._shared_gen = torch.Generator().manual_seed(random.SystemRandom().randrange(2**63))
        self._arange = torch.arange(room)
        w = weights
        self._nq = w.n_heads * w.head_dim
        self._width = (w.n_heads + 2 * w.n_kv) * w.head_dim  # a fused q|k|v row
        self._rot, self._perm = w.rot_tables(room)
        self._rh: dict[int, torch.Tensor] = {}
        self._plan, self._head = w.decode_plan()  # the linears as torch.mm operands, as FastRunner uses
        self._inv_n = 1.0 / w.hidden
        self._eps = torch.tensor(w.eps, dtype=torch.float32)
        self._zero = torch.zeros((), dtype=w.dtype)
        self._ninf = torch.full((), float("-inf"), dtype=w.dtype)

    # -- queue -----------------------------------------------------------------------
    def check(self, req: StepRequest) -> None:
        """Raise ValueError if `req` can never run here (its own fault, not the batch's).

        Everything a request brings that a step would otherwise trip over, with every other
        row in the batch, is checked here: its seed (a torch generator takes 64 bits), its
        sampling settings, and its token ids (an id past the vocabulary fails the forward)."""
        if not req.prompt:
            raise ValueError("a prompt has no tokens")
        if not isinstance(req.max_new_tokens, int) or req.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {req.max_new_tokens!r}")
        if req.seed is not None and not (isinstance(req.seed, int) and SEED_MIN <= req.seed <= SEED_MAX):
            raise ValueError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {req.seed!r:.40}")
        if not (math.isfinite(req.temperature) and req.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {req.temperature!r}")
        if not (math.isfinite(req.top_p) and 0 < req.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {req.top_p!r}")
        if min(req.prompt) < 0 or max(req.prompt) >= self.vocab:
            raise ValueError(f"a prompt token id is outside the vocabulary [0, {self.vocab})")
        need = self.plen + len(req.prompt) + req.max_new_tokens
        if need > self.max_len:
            raise ValueError(f"prompt of {len(req.prompt)} tokens + max_new_tokens {req.max_new_tokens} "
                             f"(+ {self.plen} prefix) is over the scheduler's {self.max_len} positions")

    def add(self, req: StepRequest) -> None:
        self.check(req)
        self.waiting.append(req)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.decoding or self.prefilling)

    @property
    def active(self) -> int:
        return len(self.decoding) + len(self.prefilling)

    def memory(self) -> dict[str, int]:
        """Bytes it holds: the two KV pools (grown to the longest row since the last
        `shrink`) and the prefix cache (at most its budget)."""
        w = self.w
        per_col = len(w.layers) * 2 * w.n_kv * w.head_dim * torch.empty((), dtype=w.dtype).element_size()
        pools = sum(p.rows * p.cols for p in (self.dec, self.stage)) * per_col
        return {"kv_pool_bytes": pools, "prefix_cache_bytes": self.cache.bytes if self.cache is not None else 0}

    def shrink(self) -> bool:
        """When idle, give back the pool columns one long conversation grew them to (they
        would stay for good: a pool only grows while rows live in it). True if it did."""
        if self.busy:
            return False
        done = False
        for pool in (self.dec, self.stage):
            if pool.cols > pool.plen + _GROW:
                pool.kv, pool.cols = [], 0
                pool.ensure(pool.plen + _GROW)
                done = True
        return done

    def held(self) -> list[StepRequest]:
        """The requests not yet finished here: waiting, prefilling or decoding (after a failed
        step, what the engine core must finish elsewhere)."""
        return [r for r in self.waiting if not r.done] + [r.req for r in self.prefilling if not r.req.done] + \
            [r.req for r in self.decoding if not r.req.done]

    # -- one iteration ---------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """Admit, prefill one chunk, decode one token per decoding row; return what happened.

        When some rows decode while others prefill, both ride one forward: the linears read
        their weights once for all the step's tokens, and the fixed cost of a forward (~100
        torch calls) and of a sampling pass is paid once, not twice. A row whose prompt
        completes samples its first token there and decodes from the next step on.

        If it raises, `last_events` still holds what it did before: tokens it recorded on
        requests are reported, and a request resumed elsewhere goes on from them."""
        events: list[StepEvent] = []
        self.last_events = events
        self._drop_cancelled(events)
        admitted = self._admit()
        t0 = time.perf_counter()
        chunk = self._plan_prefill() if self.prefilling else None
        dec = self._plan_decode() if self.decoding else None
        if chunk is not None and dec is not None:
            n = len(self.decoding)
            logits = self._forward([dec, chunk.part], torch.cat([self._arange[:n], chunk.out + n]))
            toks, lps = sample_rows(logits, self.decoding + [self.prefilling[j] for j in chunk.done])
            self._after_decode(toks[:n], lps[:n], events)  # first: leaving rows compact the decode pool
            self._after_prefill(chunk, toks[n:], lps[n:], events)  # then finished prompts join it
            self.stats.mixed += 1
            self.stats.mixed_seconds += time.perf_counter() - t0
        elif chunk is not None:
            logits = self._forward([chunk.part], chunk.out)
            toks, lps = sample_rows(logits, [self.prefilling[j] for j in chunk.done]) if chunk.done else ([], [])
            self._after_prefill(chunk, toks, lps, events)
            self.stats.prefill_seconds += time.perf_counter() - t0
        elif dec is not None:
            toks, lps = sample_rows(self._forward([dec], None), self.decoding)
            self._after_decode(toks, lps, events)
            self.stats.decode_seconds += time.perf_counter() - t0
        self.stats.admitted += admitted
        return events

    def _drop_cancelled(self, events: list[StepEvent]) -> None:
        for r in [r for r in self.waiting if r.cancelled]:
            self.waiting.remove(r)
            self._finish(r, events)
        for i in range(len(self.decoding) - 1, -1, -1):
            if self.decoding[i].req.cancelled:
                row = self.decoding[i]
                self._retire(i)
                self._finish(row.req, events)
        for i in range(len(self.prefilling) - 1, -1, -1):
            if self.prefilling[i].req.cancelled:
                row = self.prefilling[i]
                self._unstage(i)
                self._finish(row.req, events)

    def _finish(self, req: StepRequest, events: list[StepEvent], token: int | None = None) -> None:
        req.done = True
        self.stats.finished += 1
        events.append(StepEvent(req, token, True))

    def _admit(self) -> int:
        n = 0
        while self.waiting and self.active < self.max_batch:
            req = self.waiting.pop(0)
            try:
                row = self._admit_one(req)
            except BaseException:
                self.waiting.insert(0, req)  # still held: whoever handles the error finds it in held()
                raise
            self.prefilling.append(row)
            n += 1
        return n

    def _admit_one(self, req: StepRequest) -> _Row:
        # A seeded request owns its generator: its reply does not depend on the batch.
        # Unseeded ones share the scheduler's, so their draws take one call per step.
        # (A resumed seeded reply starts its generator again: its draws from there differ.)
        gen = torch.Generator().manual_seed(int(req.seed)) if req.seed is not None else self._shared_gen
        row = _Row(req, gen, self.plen, 0)
        slot = len(self.prefilling)
        cached = 0
        if self.cache is not None:
            keys, blocks = self.cache.match(row.ids)
            if blocks:
                cached = len(blocks) * BLOCK
                kv = torch.cat(blocks, dim=2) if len(blocks) > 1 else blocks[0]  # (layers, 2*kv, cached, hd)
                self.stage.ensure(self.plen + cached)
                for li, layer in enumerate(self.stage.kv):
                    layer[slot, :, self.plen:self.plen + cached] = kv[li]
        req.cached_tokens = cached
        self.stats.cached_tokens += cached
        row.filled, row.todo = self.plen + cached, cached
        return row

    @staticmethod
    def _drop(pool: _Pool, rows: list[_Row], i: int) -> None:
        """Remove row `i` of `rows` (rows [0, n) of `pool`): the last row moves into its place."""
        last = len(rows) - 1
        if i != last:
            pool.copy_row(pool, last, i, rows[last].filled)
            rows[i] = rows[last]
        rows.pop()

    def _unstage(self, i: int) -> None:
        self._drop(self.stage, self.prefilling, i)

    def _retire(self, i: int) -> None:
        self._drop(self.dec, self.decoding, i)

    # -- prefill ---------------------------------------------------------------------
    def _plan_prefill(self) -> "_Chunk":
        """The next prefill chunk: up to `prefill_chunk` prompt tokens shared by the rows still
        reading their prompts (each at least `_MIN_CHUNK`)."""
        rows = self.prefilling
        share = max(_MIN_CHUNK, self.prefill_chunk // len(rows))
        lens = [min(len(r.ids) - r.todo, share) for r in rows]
        q = max(lens)
        b = len(rows)
        ids = torch.zeros((b, q), dtype=torch.long)
        starts = []
        for j, (r, n) in enumerate(zip(rows, lens)):
            ids[j, :n] = torch.tensor(r.ids[r.todo:r.todo + n], dtype=torch.long)
            starts.append(r.filled)
        st = torch.tensor(starts, dtype=torch.long)
        cols = st[:, None] + self._arange[:q][None, :]  # (b, q): each query's column = its position
        span = max(starts) + q
        self.stage.ensure(span)
        done = [j for j, r in enumerate(rows) if r.todo + lens[j] == len(r.ids)]
        ends = list(itertools.accumulate(lens))  # tokens travel packed: row j's last is at ends[j] - 1
        self.stats.prefills += 1
        self.stats.prefill_tokens += sum(lens)
        self.stats.prefill_padded += b * q
        return _Chunk(_Part(self.stage, ids, cols, span, lens), lens, done,
                      torch.tensor([ends[j] - 1 for j in done], dtype=torch.long))

    def _after_prefill(self, chunk: "_Chunk", toks: list[int], lps: list[float], events: list[StepEvent]) -> None:
        """Advance the prefilling rows past `chunk`; rows whose prompt is done take their first
        token (`toks`, in `chunk.done` order) and move to the decode pool."""
        rows = self.prefilling
        for r, n in zip(rows, chunk.lens):
            r.todo += n
            r.filled += n
        moved = []
        for j, tok, lp in zip(chunk.done, toks, lps):
            r = rows[j]
            self._remember(self.stage, j, r.ids, r.req.cached_tokens)
            moved.append(j)
            if self._emit(r, tok, lp, events):
                continue  # finished on its first token: leaves without decoding
            self.dec.ensure(r.filled + 1)
            self.dec.copy_row(self.stage, j, len(self.decoding), r.filled)
            self.decoding.append(r)
        for j in sorted(moved, reverse=True):
            self._unstage(j)

    # -- decode ----------------------------------------------------------------------
    def _plan_decode(self) -> "_Part":
        """One token for every decoding row: the token each sampled last, at its next column."""
        rows = self.decoding
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long)
        cols = torch.tensor([[r.filled] for r in rows], dtype=torch.long)
        span = max(r.filled for r in rows) + 1
        self.dec.ensure(span)
        return _Part(self.dec, ids, cols, span)

    def _after_decode(self, toks: list[int], lps: list[float], events: list[StepEvent]) -> None:
        rows = self.decoding
        self.stats.steps += 1
        self.stats.rows += len(rows)
        for r in rows:
            r.filled += 1
        gone = [i for i, (r, tok, lp) in enumerate(zip(rows, toks, lps)) if self._emit(r, tok, lp, events)]
        for i in reversed(gone):
            r = rows[i]
            self._remember(self.dec, i, r.req.prompt + r.req.tokens[: r.filled - self.plen - len(r.req.prompt)],
                           len(r.req.prompt) // BLOCK * BLOCK)
            self._retire(i)

    def _emit(self, r: _Row, tok: int, lp: float, events: list[StepEvent]) -> bool:
        """Record a sampled token; True when the row is finished."""
        req = r.req
        r.sampled += 1
        req.logprobs.append(lp)
        if tok in self.stop:
            req.ended = True
            self._finish(req, events)
            return True
        req.tokens.append(tok)
        r.last = tok
        if r.sampled >= req.max_new_tokens:
            self._finish(req, events, tok)
            return True
        events.append(StepEvent(req, tok, False))
        return False

    def _remember(self, pool: _Pool, row: int, tokens: list[int], known: int) -> None:
        """Put the full blocks of `tokens` (whose KV is in `row` of `pool`) beyond `known` into the cache."""
        if self.cache is None:
            return
        n_blocks = len(tokens) // BLOCK
        first = known // BLOCK
        if n_blocks <= first:
            return
        keys = PrefixCache.keys(tokens, n_blocks)
        todo = [i for i in range(first, n_blocks) if keys[i] not in self.cache]
        if not todo:
            return
        lo, hi = self.plen + todo[0] * BLOCK, self.plen + (todo[-1] + 1) * BLOCK
        span = torch.stack([layer[row, :, lo:hi] for layer in pool.kv])  # (layers, 2*kv, cols, hd)
        for i in todo:
            a = (i - todo[0]) * BLOCK
            self.cache.put(keys[i], span[:, :, a:a + BLOCK])  # copied into the cache's slab

    # -- the forward -----------------------------------------------------------------
    def _forward(self, parts: list["_Part"], out: torch.Tensor | None) -> torch.Tensor:
        """One forward over the tokens of `parts` (a decode part, a prefill chunk, or both);
        float32 logits (len(out), V) at the packed token indices `out` (None: every token).

        In a part, rows [0, b) of its pool read ids (b, q) at columns (b, q) (column =
        position) over keys [0, span); row j's first `lens[j]` queries are real (the rest
        right padding), all of them when q == 1. Tokens travel packed, (n real tokens,
        width), parts one after the other: the linears, norms and MLP never see padding,
        and only attention works per part (its own pool, mask and layout). Per layer the
        step is lean (as FastRunner's decode step): the residual adds ride in addmm, rotary
        is three ops over the fused q|k|v rows, k and v are stored in one write, and a
        decode query stays a view of the matmul's output."""
        w = self.w
        nh, nkv, hd = w.n_heads, w.n_kv, w.head_dim
        nq_, width, inter = self._nq, self._width, w.inter
        segs, tok_ids, tok_cols = [], [], []
        lo = 0
        for part in parts:
            b, q = part.ids.shape
            if q == 1:
                sel = None
                ids, cols = part.ids.view(b), part.cols.view(b)
                rh = self._row_heads(b)
            else:
                real = self._arange[:q][None, :] < torch.tensor(part.lens)[:, None]  # (b, q)
                sel = real.view(-1).nonzero().view(-1)  # flat (row, query) positions of real tokens
                ids, cols = part.ids.view(-1)[sel], part.cols.view(-1)[sel]
                rh = self._row_heads(b)[sel // q]
            n = ids.shape[0]
            # A query sees every column up to its own: the prefix, cached blocks, earlier
            # chunks, itself. Later columns (padding, stale rows) are masked.
            mask = torch.where(self._arange[:part.span][None, None, :] <= part.cols[:, :, None], self._zero, self._ninf)
            at = (rh, cols[:, None].expand(n, 2 * nkv))  # where each token's k|v heads go in the pool
            segs.append((part.pool, b, q, part.span, sel, mask.view(b, 1, q, part.span), at, lo, lo + n))
            tok_ids.append(ids)
            tok_cols.append(cols)
            lo += n
        n = lo
        h = F.embedding(tok_ids[0] if len(parts) == 1 else torch.cat(tok_ids), w.embed)  # (n, hidden)
        cs = self._rot.index_select(0, tok_cols[0] if len(parts) == 1 else torch.cat(tok_cols))
        c, sn = cs.narrow(1, 0, width), cs.narrow(1, width, width)
        eps = self._eps
        inv_n = self._inv_n
        for i, (ly, (ln1, wqkv, bqkv, wo, bo, ln2, wgu, wd)) in enumerate(zip(w.layers, self._plan)):
            qkv = _mm(_rms(h, ln1, eps, inv_n), wqkv, bqkv)  # (n, width)
            if ly.qnorm is not None:  # Qwen3: per-head norms of q and k before rotary
                qkv[:, :nq_] = F.rms_norm(qkv[:, :nq_].view(n, nh, hd), (hd,), ly.qnorm, w.eps).view(n, nq_)
                kk = qkv[:, nq_:nq_ + nkv * hd]
                qkv[:, nq_:nq_ + nkv * hd] = F.rms_norm(kk.reshape(n, nkv, hd), (hd,), ly.knorm, w.eps).view(n, -1)
            turned = qkv.index_select(1, self._perm)
            qkv.mul_(c).addcmul_(turned, sn)  # rotary on q and k; v passes (cos 1, sin 0)
            att = []
            for pool, b, q, span, sel, mask, at, t0, t1 in segs:
                x = qkv if len(segs) == 1 else qkv[t0:t1]
                kv = pool.kv[i]
                kv.view(-1, pool.cols, hd).index_put_(at, x[:, nq_:].view(t1 - t0, 2 * nkv, hd))
                keys, values = kv[:b, :nkv, :span], kv[:b, nkv:, :span]
                if sel is None:
                    # grouped-query decode without repeating k/v (as FastRunner): the g query
                    # heads of a kv head become g query rows over that head's keys
                    a = F.scaled_dot_product_attention(x[:, :nq_].view(b, nkv, nh // nkv, hd), keys, values,
                                                       attn_mask=mask).view(b, nq_)
                else:
                    qp = qkv.new_zeros((b * q, nq_))
                    qp[sel] = x[:, :nq_]
                    a = F.scaled_dot_product_attention(qp.view(b, q, nh, hd).transpose(1, 2), keys, values,
                                                       attn_mask=mask, enable_gqa=nh != nkv)
                    a = a.transpose(1, 2).reshape(b * q, nq_)[sel]
                att.append(a)
            h = _mm_add(h, att[0] if len(att) == 1 else torch.cat(att), wo, bo)
            gu = _mm(_rms(h, ln2, eps, inv_n), wgu)
            h = _mm_add(h, F.silu(gu[:, :inter]).mul_(gu[:, inter:]), wd)
        if out is not None:
            h = h[out]
        return _mm(_rms(h, w.norm, eps, inv_n), self._head).float()

    def _row_heads(self, b: int) -> torch.Tensor:
        """(b, 2*kv) indices of rows [0, b)'s k|v heads in a (rows*2*kv, cols, hd) view of a pool."""
        t = self._rh.get(b)
        if t is None:
            n2 = 2 * self.w.n_kv
            t = self._rh[b] = torch.arange(b)[:, None] * n2 + torch.arange(n2)[None, :]
        return t


def generate(scheduler: Scheduler, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None):
    """Run `prompts` to the end on `scheduler` (same settings for all; row r seeded `seed + r`).

    Returns what `fastdecode.decode` returns: (token lists without the stop token, their
    log-prob lists including the stop token's, ended-with-stop flags)."""
    reqs = [StepRequest(list(p), max_new_tokens, temperature, top_p, None if seed is None else seed + r)
            for r, p in enumerate(prompts)]
    for r in reqs:
        scheduler.add(r)
    while scheduler.busy:
        scheduler.step()
    return [r.tokens for r in reqs], [r.logprobs for r in reqs], [r.ended for r in reqs]
