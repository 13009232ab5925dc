"""The lean decode path under `EndModel`: fused weights, a pre-allocated KV cache, one loop.

The engine knows nothing about tokenization here: runners take token ids and positions,
`decode` returns token ids and their log-probs.

    FastWeights.from_model(hf_model)  Llama/Qwen2/Qwen3-family weights, q|k|v and gate|up fused
                                      (fp32: stored input-major, see INPUT_MAJOR_DTYPES)
    FastRunner(weights, prefix)       one forward over those tensors, writing a static cache;
                                      a decode token takes the lean step (`_step`)
    HFRunner(model, prefix)           the same contract through the transformers forward
                                      (any architecture; the reference in tests)
    decode(runner, prompts, ...)      left-padded batched prefill, then one token per step

At the size of the embedded default base (hidden 192, 3 layers, 7.7 MB of fp32 weights)
a decode step is per-op dispatch more than FLOPs: transformers spends ~5 ms of CPU per
token where the matmuls need well under 1 ms. So the lean step counts ops (~15 per layer):
2-D activations, RMSNorm as five small ops, the residual add inside addmm, rotary as three
ops over the whole fused q|k|v row (`rot_tables`), k and v written to the cache in one
copy. Measured in bench/bench_decode.py; torch.compile of the same step was not faster by
enough to pay its compile time (docs/bench/decode-speed.md).

Layout of one row's cache (P = learned prefix length, L = longest prompt):

    | prefix (P) | pads ... prompt (L) | generated ... |
      pos: none    pads: masked, prompt token j at position P + j, then P + n, P + n + 1, ...

Positions start at P because that is what peft's own forward does for prefix tuning (it
shifts position_ids by num_virtual_tokens); for a bare base or LoRA, P = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# top-p first looks at this many most likely tokens; a full sort only when their mass < top_p.
TOP_P_CANDIDATES = 256
SUPPORTED_TYPES = ("qwen2", "llama", "mistral", "qwen3")
# Dtypes whose linear weights are stored input-major: an (out, in)-shaped view of (in, out)
# contiguous memory, so `x @ w.t()` reads a contiguous matrix. For fp32 (MKL sgemm) that was
# 1.2-2.8x faster per matmul at batch 1-8 than the (out, in) layout on this CPU (the 4000x192
# lm_head at batch 8: 336 vs 930 us); bf16 (oneDNN) is faster the usual way round. Whole
# decode steps: bench/bench_decode.py --layouts. The fields keep their (out, in) shapes.
INPUT_MAJOR_DTYPES = (torch.float32,)


class Q8(NamedTuple):
    """A weight-only int8 linear: int8 rows and one scale per output channel (symmetric)."""

    q: torch.Tensor
    s: torch.Tensor

    @classmethod
    def of(cls, w: torch.Tensor) -> "Q8":
        wf = w.detach().float()
        scale = wf.abs().amax(dim=1).clamp_min(1e-8) / 127.0
        q = torch.round(wf / scale[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
        return cls(q, scale.to(w.dtype))


def _lin(x: torch.Tensor, w, bias=None) -> torch.Tensor:
    """F.linear, or torch's int8 weight-only matmul kernel for a Q8 weight."""
    if w.__class__ is Q8:
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), w.q, w.s).view(*x.shape[:-1], -1)
        return y if bias is None else y + bias
    return F.linear(x, w, bias)


def _arrange(t: torch.Tensor, input_major: bool) -> torch.Tensor:
    """`t` (out, in) in the memory order the matmuls want (a copy only when it is not already)."""
    t = t.detach()
    if not input_major:
        return t if t.is_contiguous() else t.contiguous()
    return t if t.t().is_contiguous() else t.t().contiguous().t()


def _fuse(ws, input_major: bool) -> torch.Tensor:
    """Weights (out_i, in) stacked along out, in the memory order of `_arrange`."""
    if input_major:
        return torch.cat([w.detach().t() for w in ws], 1).t()
    return torch.cat([w.detach() for w in ws], 0)


def _nbytes(t) -> int:
    if t is None:
        return 0
    if isinstance(t, Q8):
        return _nbytes(t.q) + _nbytes(t.s)
    return t.numel() * t.element_size()


@dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor
    qnorm: torch.Tensor | None
    knorm: torch.Tensor | None
    src: tuple  # data_ptrs of the source weights, to share fused tensors between variants


class FastWeights:
    """A decoder's weights as flat tensors, q/k/v and gate/up fused into one matmul each."""

    def __init__(self, *, layers, embed, norm, lm_head, eps, n_heads, n_kv, head_dim, inter, rotary, dtype):
        self.layers: list[_Layer] = layers
        self.embed, self.norm, self.lm_head = embed, norm, lm_head
        self.eps, self.n_heads, self.n_kv, self.head_dim, self.inter = eps, n_heads, n_kv, head_dim, inter
        self.hidden = embed.shape[1]
        self.rotary = rotary
        self.dtype = dtype
        self.quant: str | None = None
        self._cos = self._sin = None
        self._rot = None  # (table, perm) of `rot_tables`
        self._plan = None  # per-layer tensors of the lean decode step, see `decode_plan`

    def nbytes(self) -> int:
        """Bytes of weights one decode step reads (the lm_head, not the embedding lookup)."""
        names = ("ln1", "wqkv", "bqkv", "wo", "bo", "ln2", "wgu", "wd", "qnorm", "knorm")
        return sum(_nbytes(getattr(ly, n)) for ly in self.layers for n in names) + _nbytes(self.norm) + _nbytes(
            self.lm_head)

    def quantized(self, kind: str = "int8", cache: dict | None = None) -> "FastWeights":
        """A copy whose linears (and lm_head) are weight-only int8; norms and the embedding stay.

        `cache` (id -> (tensor, Q8)) lets variants share the quantized copy of a tensor they
        share with the base, so a LoRA variant only quantizes the layers it changed.
        """
        if kind != "int8":
            raise ValueError(f"unknown quantization {kind!r}; the fast path knows 'int8'")
        cache = {} if cache is None else cache

        def q8(t):
            hit = cache.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
            out = Q8.of(t)
            cache[id(t)] = (t, out)
            return out

        layers = [replace(ly, wqkv=q8(ly.wqkv), wo=q8(ly.wo), wgu=q8(ly.wgu), wd=q8(ly.wd)) for ly in self.layers]
        new = FastWeights(layers=layers, embed=self.embed, norm=self.norm, lm_head=q8(self.lm_head), eps=self.eps,
                          n_heads=self.n_heads, n_kv=self.n_kv, head_dim=self.head_dim, inter=self.inter,
                          rotary=self.rotary, dtype=self.dtype)
        new.quant = kind
        return new

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        return (getattr(cfg, "model_type", "") in SUPPORTED_TYPES and getattr(cfg, "hidden_act", "silu") == "silu"
                and hasattr(getattr(model, "model", None), "layers"))

    @classmethod
    def from_model(cls, model, *, like: "FastWeights | None" = None,
                   input_major: bool | None = None) -> "FastWeights | None":
        """Build from an HF causal LM, or None when the architecture is not supported.

        With `like` (the base's FastWeights), layers whose weights are the base's very tensors
        reuse its fused copies, so a LoRA variant only pays for the layers it changed. Without
        it the model's own q/k/v and gate/up parameters are re-pointed into the fused tensors,
        and its other linears into their input-major copies, so this costs no extra memory.
        `input_major` overrides the memory order INPUT_MAJOR_DTYPES picks (for benchmarks).
        """
        if not cls.supports(model):
            return None
        cfg = model.config
        inner = model.model
        n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        major = inner.embed_tokens.weight.dtype in INPUT_MAJOR_DTYPES if input_major is None else input_major
        layers = []
        with torch.no_grad():
            for i, ly in enumerate(inner.layers):
                at, mlp = ly.self_attn, ly.mlp
                ws = (at.q_proj.weight, at.k_proj.weight, at.v_proj.weight, mlp.gate_proj.weight, mlp.up_proj.weight)
                bs = (at.q_proj.bias, at.k_proj.bias, at.v_proj.bias)
                src = tuple(t.data_ptr() for t in ws) + tuple(0 if b is None else b.data_ptr() for b in bs)
                prev = like.layers[i] if like is not None and i < len(like.layers) else None
                if prev is not None and prev.src == src:
                    wqkv, bqkv, wgu = prev.wqkv, prev.bqkv, prev.wgu
                else:
                    wqkv = _fuse(ws[:3], major)
                    bqkv = None if bs[0] is None else torch.cat([b.detach() for b in bs], 0).contiguous()
                    wgu = _fuse(ws[3:], major)
                if like is None:
                    # The unfused linears in the matmul's memory order, the model re-pointed at them.
                    for lin in (at.o_proj, mlp.down_proj):
                        lin.weight.data = _arrange(lin.weight, major)
                if like is None and (prev is None or prev.src != src):
                    # Re-point the base's own parameters into the fused storage: no duplicate memory.
                    # (Never for a variant: its untouched parameters are the base's own objects.)
                    nq, nk = ws[0].shape[0], ws[1].shape[0]
                    at.q_proj.weight.data = wqkv[:nq]
                    at.k_proj.weight.data = wqkv[nq:nq + nk]
                    at.v_proj.weight.data = wqkv[nq + nk:]
                    if bqkv is not None:
                        at.q_proj.bias.data = bqkv[:nq]
                        at.k_proj.bias.data = bqkv[nq:nq + nk]
                        at.v_proj.bias.data = bqkv[nq + nk:]
                    ni = ws[3].shape[0]
                    mlp.gate_proj.weight.data = wgu[:ni]
                    mlp.up_proj.weight.data = wgu[ni:]
                    ws = (at.q_proj.weight, at.k_proj.weight, at.v_proj.weight, mlp.gate_proj.weight,
                          mlp.up_proj.weight)
                    bs = (at.q_proj.bias, at.k_proj.bias, at.v_proj.bias)
                    src = tuple(t.data_ptr() for t in ws) + tuple(0 if b is None else b.data_ptr() for b in bs)
                def same(t, old, linear=False):
                    # The very tensor object of `like` when it is the same storage: identity lets
                    # quantized copies be shared between variants.
                    if t is None:
                        return None
                    if old is not None and old.data_ptr() == t.data_ptr() and old.shape == t.shape:
                        return old
                    return _arrange(t, major) if linear else t.detach()

                p = prev if prev is not None else _Layer(*([None] * 10), src=())
                layers.append(_Layer(
                    ln1=same(ly.input_layernorm.weight, p.ln1), wqkv=wqkv, bqkv=bqkv,
                    wo=same(at.o_proj.weight, p.wo, True), bo=same(at.o_proj.bias, p.bo),
                    ln2=same(ly.post_attention_layernorm.weight, p.ln2), wgu=wgu,
                    wd=same(mlp.down_proj.weight, p.wd, True),
                    qnorm=same(at.q_norm.weight, p.qnorm) if hasattr(at, "q_norm") else None,
                    knorm=same(at.k_norm.weight, p.knorm) if hasattr(at, "k_norm") else None,
                    src=src,
                ))
            out_emb = model.get_output_embeddings()
            if like is None:  # a tied input embedding is the same Parameter: its rows become strided, fine
                out_emb.weight.data = _arrange(out_emb.weight, major)
        head = out_emb.weight
        if like is not None and like.lm_head.data_ptr() == head.data_ptr():
            head = like.lm_head
        else:
            head = _arrange(head, major)
        return cls(
            layers=layers, embed=inner.embed_tokens.weight.detach(), norm=inner.norm.weight.detach(),
            lm_head=head,
            eps=float(cfg.rms_norm_eps), n_heads=n_heads,
            n_kv=n_kv, head_dim=head_dim, inter=cfg.intermediate_size, rotary=inner.rotary_emb,
            dtype=inner.embed_tokens.weight.dtype,
        )

    def rope(self, n: int):
        """cos, sin tables (n, head_dim) from the model's own rotary module (any static rope type);
        the first half of sin is negated so rotary is x*cos + roll(x, head_dim/2)*sin."""
        cos, sin = self._cos, self._sin
        if cos is None or cos.shape[0] < n:
            m = max(n, 1024)
            with torch.no_grad():
                cos, sin = self.rotary(self.embed[:1], torch.arange(m)[None])
            cos, sin = cos[0].to(self.dtype), sin[0].clone()
            sin[:, : sin.shape[1] // 2].neg_()  # folds rotate_half's sign into the table (see FastRunner)
            sin = sin.to(self.dtype)
            self._cos, self._sin = cos, sin  # a bigger table replaces the old one: safe for readers
        return cos, sin

    def rot_tables(self, n: int):
        """Rotary for a whole fused q|k|v row at once: (table (m >= n, 2W), perm (W,)), W the row width.

        Row p of the table is [c | s]: c holds cos(p) under every q and k head and 1 under v,
        s holds the sign-folded sin(p) under q and k and 0 under v, and `perm` rolls every
        head by head_dim/2. So the rotated row is row * c + row[perm] * s (v passes through),
        three ops per layer instead of a roll, a cat and a split.
        """
        rot = self._rot
        if rot is None or rot[0].shape[0] < n:
            cos, sin = self.rope(n)
            hd, nqk = self.head_dim, self.n_heads + self.n_kv
            m, nv = cos.shape[0], self.n_kv * hd
            c = torch.cat((cos.repeat(1, nqk), torch.ones(m, nv, dtype=cos.dtype)), 1)
            s = torch.cat((sin.repeat(1, nqk), torch.zeros(m, nv, dtype=sin.dtype)), 1)
            heads = torch.arange(nqk + self.n_kv)[:, None] * hd
            perm = (heads + (torch.arange(hd) + hd // 2) % hd).reshape(-1)
            rot = self._rot = (torch.cat((c, s), 1).contiguous(), perm)  # replaced whole, as in `rope`
        return rot

    def decode_plan(self) -> tuple:
        """Per layer, what the lean decode step reads: the linears as (in, out) operands of
        `torch.mm` (views, no copies; Q8 as is) next to the norms and biases. Built once."""
        plan = self._plan
        if plan is None:
            def op(t):
                return t if t.__class__ is Q8 else t.t()
            layers = tuple((ly.ln1, op(ly.wqkv), ly.bqkv, op(ly.wo), ly.bo, ly.ln2, op(ly.wgu), op(ly.wd))
                           for ly in self.layers)
            self._plan = plan = (layers, op(self.lm_head))
        return plan


def _mm(x: torch.Tensor, w, bias=None) -> torch.Tensor:
    """x (n, in) times a `decode_plan` operand (+ bias)."""
    if w.__class__ is Q8:
        y = torch._weight_int8pack_mm(x, w.q, w.s)
        return y if bias is None else y.add_(bias)
    return torch.mm(x, w) if bias is None else torch.addmm(bias, x, w)


def _mm_add(h: torch.Tensor, x: torch.Tensor, w, bias=None) -> torch.Tensor:
    """h + x @ w (+ bias): the residual rides in addmm's accumulator."""
    if w.__class__ is Q8:
        y = torch._weight_int8pack_mm(x, w.q, w.s).add_(h)
    else:
        y = torch.addmm(h, x, w)
    return y if bias is None else y.add_(bias)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor, inv_n: float) -> torch.Tensor:
    """RMSNorm of the rows of x (n, hidden) in HF's order (normalise in fp32, round to the
    weight's dtype, scale), as five small ops: on CPU `F.rms_norm` runs as ~10 (pow, mean,
    casts, ...) and cost ~10x one elementwise op at decode sizes (measured)."""
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    y = x * torch.addcmul(eps, r, r, value=inv_n).rsqrt_()
    return (y if y.dtype == weight.dtype else y.to(weight.dtype)) * weight


class FastRunner:
    """Forward passes over FastWeights writing into a cache pre-allocated by `start`.

    One decode token per row (q == 1) takes the lean step (`_step`): activations stay 2-D,
    the residual adds ride in addmm, rotary is three ops over the whole fused q|k|v row, and
    k and v of a layer are written to the cache in one copy (its k and v halves are one
    tensor, `self.kv`; `self.k` / `self.v` are views of it). Prefill (q > 1) and models
    with q/k norms (Qwen3) take the general forward.
    """

    def __init__(self, w: FastWeights, prefix=None):
        self.w = w
        self.prefix = prefix
        self.prefix_len = 0 if prefix is None else int(prefix[0][0].shape[2])
        self._lean = all(ly.qnorm is None for ly in w.layers)

    def start(self, batch: int, total: int) -> None:
        w = self.w
        # k heads then v heads of a layer side by side, as they leave the fused q|k|v matmul.
        self.kv = [torch.empty((batch, 2 * w.n_kv, total, w.head_dim), dtype=w.dtype) for _ in w.layers]
        self.k = [kv[:, : w.n_kv] for kv in self.kv]
        self.v = [kv[:, w.n_kv:] for kv in self.kv]
        if self.prefix is not None:
            for i, (pk, pv) in enumerate(self.prefix):
                self.k[i][:, :, : self.prefix_len] = pk
                self.v[i][:, :, : self.prefix_len] = pv
        self.len = self.prefix_len
        self.cos, self.sin = w.rope(total + 1)
        if self._lean:
            self.rot, self.perm = w.rot_tables(total + 1)
            self.plan, self.head = w.decode_plan()
            self.eps = torch.tensor(w.eps, dtype=torch.float32)
            self.zero = torch.zeros((), dtype=w.dtype)
            self.ninf = torch.full((), float("-inf"), dtype=w.dtype)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, all_logits: bool = False):
        """ids/pos (B, q) -> float32 logits (B, q or 1, V); `valid` (B, len+q) marks keys that may be seen."""
        if ids.shape[1] == 1 and self._lean:
            return self._step(ids, pos, valid)
        return self._forward(ids, pos, valid, all_logits)

    def _step(self, ids: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One token per row: the same maths as `_forward` in fewer, cheaper ops (see the class)."""
        w = self.w
        b = ids.shape[0]
        s = self.len
        e = s + 1
        nkv, hd = w.n_kv, w.head_dim
        nq = w.n_heads * hd
        perm = self.perm
        width = perm.shape[0]
        inter, eps, inv_n = w.inter, self.eps, 1.0 / w.hidden
        h = F.embedding(ids.view(b), w.embed)
        cs = self.rot.index_select(0, pos.view(b))
        c, sn = cs.narrow(1, 0, width), cs.narrow(1, width, width)
        # One additive mask per step, shared by the layers (SDPA adds it to the scores).
        mask = torch.where(valid.narrow(1, 0, e), self.zero, self.ninf).view(b, 1, 1, e)
        for kv, k, v, (ln1, wqkv, bqkv, wo, bo, ln2, wgu, wd) in zip(self.kv, self.k, self.v, self.plan):
            qkv = _mm(_rms(h, ln1, eps, inv_n), wqkv, bqkv)
            turned = qkv.index_select(1, perm)
            qkv.mul_(c).addcmul_(turned, sn)
            kv.select(2, s).copy_(qkv.narrow(1, nq, width - nq).view(b, 2 * nkv, hd))
            # Grouped-query decode without repeating k/v: the g query heads of a kv head
            # become g "query rows" over that head's keys.
            a = F.scaled_dot_product_attention(qkv.narrow(1, 0, nq).view(b, nkv, -1, hd), k.narrow(2, 0, e),
                                               v.narrow(2, 0, e), attn_mask=mask)
            h = _mm_add(h, a.view(b, nq), wo, bo)
            gu = _mm(_rms(h, ln2, eps, inv_n), wgu)
            h = _mm_add(h, F.silu(gu.narrow(1, 0, inter)).mul_(gu.narrow(1, inter, inter)), wd)
        self.len = e
        return _mm(_rms(h, w.norm, eps, inv_n), self.head).float().view(b, 1, -1)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, all_logits: bool = False):
        w = self.w
        b, q = ids.shape
        s, e = self.len, self.len + q
        nh, nkv, hd = w.n_heads, w.n_kv, w.head_dim
        nq_, nk_ = nh * hd, nkv * hd
        half = hd // 2
        h = F.embedding(ids, w.embed)
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # (B, 1, q, hd); sin sign-folded
        if q == 1:
            allowed = valid[:, None, None, :e]
        else:
            kidx = torch.arange(e)
            qidx = torch.arange(s, e)
            # A pad query would see no key at all (NaN); let it see itself. Its output is never used.
            causal = (kidx[None, :] <= qidx[:, None])
            allowed = (valid[:, None, None, :e] & causal) | (kidx[None, :] == qidx[:, None])
        # One additive mask per forward instead of a bool->float conversion in every layer.
        mask = torch.zeros(allowed.shape, dtype=w.dtype).masked_fill_(~allowed, float("-inf"))
        for i, ly in enumerate(w.layers):
            x = F.rms_norm(h, (w.hidden,), ly.ln1, w.eps)
            qkv = _lin(x, ly.wqkv, ly.bqkv)
            # q and k side by side as (B, heads, q, hd): rotary once for both.
            qk = qkv[..., : nq_ + nk_].view(b, q, nh + nkv, hd).transpose(1, 2)
            vh = qkv[..., nq_ + nk_:].view(b, q, nkv, hd).transpose(1, 2)
            if ly.qnorm is not None:
                qk = torch.cat((F.rms_norm(qk[:, :nh], (hd,), ly.qnorm, w.eps),
                                F.rms_norm(qk[:, nh:], (hd,), ly.knorm, w.eps)), dim=1)
            # rotate_half(x) * sin == roll(x, half) * (sin with its first half negated)
            qk = qk * cos + qk.roll(half, -1) * sin
            qh, kh = qk[:, :nh], qk[:, nh:]
            kc, vc = self.k[i], self.v[i]
            kc[:, :, s:e] = kh
            vc[:, :, s:e] = vh
            if q == 1:
                a = F.scaled_dot_product_attention(qh.reshape(b, nkv, nh // nkv, hd), kc[:, :, :e], vc[:, :, :e],
                                                   attn_mask=mask)
                a = a.reshape(b, 1, nq_)
            else:
                a = F.scaled_dot_product_attention(qh, kc[:, :, :e], vc[:, :, :e], attn_mask=mask,
                                                   enable_gqa=nh != nkv)
                a = a.transpose(1, 2).reshape(b, q, nq_)
            h = h + _lin(a, ly.wo, ly.bo)
            x = F.rms_norm(h, (w.hidden,), ly.ln2, w.eps)
            gu = _lin(x, ly.wgu)
            h = h + _lin(F.silu(gu[..., : w.inter]) * gu[..., w.inter:], ly.wd)
        self.len = e
        if not all_logits:
            h = h[:, -1:]
        h = F.rms_norm(h, (w.hidden,), w.norm, w.eps)
        return _lin(h, w.lm_head).float()


class HFRunner:
    """The same contract through the transformers forward and a DynamicCache (any architecture)."""

    def __init__(self, model, prefix=None):
        self.model = model
        self.prefix = prefix
        self.prefix_len = 0 if prefix is None else int(prefix[0][0].shape[2])
        # On a GPU the ids go there and the last logits come back: sampling stays on the CPU,
        # with the CPU generator every engine's seeds are defined by.
        self.device = next(model.parameters()).device

    def start(self, batch: int, total: int) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        if self.prefix is not None:
            for i, (pk, pv) in enumerate(self.prefix):
                self.cache.update(pk.expand(batch, -1, -1, -1).contiguous(), pv.expand(batch, -1, -1, -1).contiguous(), i)

    def forward(self, ids, pos, valid, all_logits: bool = False):
        dev = self.device
        out = self.model(input_ids=ids.to(dev), position_ids=pos.to(dev), attention_mask=valid.long().to(dev),
                         past_key_values=self.cache, use_cache=True, logits_to_keep=0 if all_logits else 1)
        self.cache = out.past_key_values
        return out.logits.float().cpu()


def _layout(prompts: list[list[int]], extra: int, prefix_len: int, pad_id: int):
    b, n = len(prompts), max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("a prompt has no tokens")
    total = prefix_len + n + extra
    ids = torch.full((b, n), pad_id, dtype=torch.long)
    pos = torch.zeros((b, n), dtype=torch.long)
    valid = torch.zeros((b, total), dtype=torch.bool)
    valid[:, :prefix_len] = True
    for r, p in enumerate(prompts):
        k = len(p)
        ids[r, n - k:] = torch.tensor(p, dtype=torch.long)
        pos[r, n - k:] = torch.arange(prefix_len, prefix_len + k)
        valid[r, prefix_len + n - k: prefix_len + n] = True
    nxt = torch.tensor([prefix_len + len(p) for p in prompts], dtype=torch.long)
    return ids, pos, valid, nxt, prefix_len + n, total


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`torch.multinomial(probs, 1, generator=generator)`, draw for draw, without its checks.

    For one sample torch's CPU multinomial is Gumbel-max: argmax(p / q), q ~ Exp(1) drawn by
    `exponential_` over the row. Spelled out here it skips the validity checks (a max, a
    min, a row sum and two syncs, ~60 us a call) on probabilities that are finite and have
    a positive entry by construction (exp of log-probs, the most likely token kept).
    """
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return torch.div(probs, q, out=q).argmax(dim=-1, keepdim=True)


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator):
    """Pick one token per row; return (tokens, their log-prob under the raw distribution)."""
    logp = torch.log_softmax(logits, dim=-1)
    if temperature <= 0:
        tok = logits.argmax(dim=-1)
    else:
        scaled = logits / temperature
        if top_p >= 1.0:
            tok = _draw(torch.softmax(scaled, -1), generator)[:, 0]
        else:
            lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
            vocab = scaled.shape[-1]
            k = min(TOP_P_CANDIDATES, vocab)
            while True:  # widen the candidates until they hold top_p of the mass in every row
                if k >= vocab:  # numpy's sort: 4-8x faster than torch.sort on these rows, same order
                    idx = torch.from_numpy(np.argsort(-scaled.numpy(), axis=-1))  # for distinct values
                    vals = scaled.gather(-1, idx)
                else:
                    vals, idx = torch.topk(scaled, k, dim=-1)  # sorted, most likely first
                probs = torch.exp(vals - lse)
                cum = probs.cumsum(-1)
                if k >= vocab or not bool((cum[:, -1] < top_p).any()):
                    break
                k = min(k * 16, vocab)
            keep = (cum - probs) < top_p  # smallest prefix whose mass reaches top_p
            probs = probs * keep
            choice = _draw(probs, generator)
            tok = idx.gather(-1, choice)[:, 0]
    return tok, logp.gather(-1, tok[:, None])[:, 0]


@torch.inference_mode()
def decode(runner, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
           stop_ids: list[int], generator: torch.Generator, pad_id: int = 0):
    """Generate for all prompts at once. Returns (token lists without the stop token, their
    log-prob lists including the stop token's, ended-with-stop flags)."""
    b = len(prompts)
    ids, pos, valid, nxt, used, total = _layout(prompts, max_new_tokens, runner.prefix_len, pad_id)
    runner.start(b, total)
    logits = runner.forward(ids, pos, valid[:, :used])[:, -1]
    stops = set(stop_ids)
    ended = [False] * b
    toks, lps = [], []
    nxt = nxt.view(b, 1)
    for t in range(max_new_tokens):
        tok, lp = sample(logits, temperature, top_p, generator)
        toks.append(tok)
        lps.append(lp)
        if stops:  # one read of b ints per step (no device here to sync with) to stop when all rows ended
            ended = [e or x in stops for e, x in zip(ended, tok.tolist())]
            if all(ended):
                break
        if t + 1 == max_new_tokens:
            break
        valid.select(1, used).fill_(True)
        used += 1
        logits = runner.forward(tok.view(b, 1), nxt, valid.narrow(1, 0, used))[:, -1]
        nxt.add_(1)
    out_t, out_lp, ended = [], [], []
    for row_t, row_lp in zip(torch.stack(toks, 1).tolist(), torch.stack(lps, 1).tolist()):
        cut = next((j for j, x in enumerate(row_t) if x in stops), None)
        if cut is None:
            out_t.append(row_t), out_lp.append(row_lp), ended.append(False)
        else:
            out_t.append(row_t[:cut]), out_lp.append(row_lp[: cut + 1]), ended.append(True)
    return out_t, out_lp, ended


@torch.inference_mode()
def forced_logits(runner, prompts: list[list[int]], forced: list[list[int]], *, pad_id: int = 0) -> list[Any]:
    """Logits at each step when the continuation is `forced` (same length for every row)."""
    n_new = len(forced[0])
    if any(len(f) != n_new for f in forced):
        raise ValueError("forced continuations must have equal lengths")
    ids, pos, valid, nxt, used, total = _layout(prompts, n_new, runner.prefix_len, pad_id)
    runner.start(len(prompts), total)
    steps = [runner.forward(ids, pos, valid[:, :used])[:, -1]]
    f = torch.tensor(forced, dtype=torch.long)
    for t in range(n_new):
        valid[:, used] = True
        used += 1
        steps.append(runner.forward(f[:, t:t + 1], nxt[:, None], valid[:, :used])[:, -1])
        nxt += 1
    stacked = torch.stack(steps, dim=1)
    return [stacked[r] for r in range(len(prompts))]
