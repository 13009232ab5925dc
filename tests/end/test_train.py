"""SFT training: every tuner learns, only adapter weights move, save/load is exact, resume works."""

from __future__ import annotations

import json

import pytest
import torch

from endcloud.end.base import load_base
from endcloud.end.data import (
    IGNORE_INDEX,
    Encoder,
    Example,
    collate,
    length_buckets,
    mix_examples,
    split_holdout,
)
from endcloud.end.train import evaluate_loss, load_trained, train
from endcloud.errors import ConfigError, DataError

METHODS = ["lora", "prefix", "ptuning-v2"]
# A tiny base learns slowly at Table IV's 5e-5; tests use high rates, few virtual tokens, few steps.
FAST = {"lr": 3e-2, "batch_size": 4, "progress": False, "num_virtual_tokens": 8, "encoder_hidden_size": 32}
LR = {"lora": 1e-2, "prefix": 3e-2, "ptuning-v2": 1e-1}
STYLE = "亲，可以领取满99减10的优惠券哦。"  # teach one reply style to every query


def test_reply_only_loss_mask(tiny_tokenizer, train_examples):
    enc = Encoder(tiny_tokenizer)
    ex = train_examples[1]
    e = enc.encode(ex)
    n_prompt = sum(1 for t in e.labels if t == IGNORE_INDEX)
    prompt = tiny_tokenizer.decode(e.input_ids[:n_prompt])
    reply = tiny_tokenizer.decode(e.input_ids[n_prompt:])
    assert prompt.endswith("<|im_start|>assistant\n") and ex.messages[0]["content"] in prompt
    assert reply == ex.response + "<|im_end|>"  # reply + end-of-turn, nothing after
    assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    assert all(t == IGNORE_INDEX for t in e.labels[:n_prompt])


def test_truncation_keeps_recent_context_and_cuts_reply(tiny_tokenizer):
    ctx = []
    for i in range(30):
        ctx += [{"role": "user", "content": f"old question {i} about towels"}, {"role": "assistant", "content": f"old answer {i}"}]
    ex = Example(ctx + [{"role": "user", "content": "Where is my parcel?"}], "Sorry for the wait, " * 40, id="long")
    e = Encoder(tiny_tokenizer, max_input_len=48, max_output_len=10).encode(ex)
    n_prompt = sum(1 for t in e.labels if t == IGNORE_INDEX)
    assert e.truncated and n_prompt <= 48 and len(e) - n_prompt == 10
    prompt = tiny_tokenizer.decode(e.input_ids[:n_prompt])
    assert "Where is my parcel?" in prompt and "old question 0 " not in prompt
    with pytest.raises(ConfigError, match="-1"):
        Encoder(tiny_tokenizer, max_input_len=-1)
    with pytest.raises(DataError, match="user"):
        Encoder(tiny_tokenizer).encode(Example([{"role": "assistant", "content": "hi"}], "x"))


def test_length_buckets_group_similar_lengths_and_cover_all():
    lengths = [5, 90, 7, 88, 6, 91, 8, 89]
    batches = length_buckets(lengths, 2, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 0.6 * len(lengths) * max(lengths)  # far less padding than pad-to-max


def test_bucketed_batch_gives_same_loss_as_one_by_one(tiny_base_dir, train_examples):
    model, tok = load_base(tiny_base_dir)
    enc = Encoder(tok).encode_all(train_examples)
    together = evaluate_loss(model, enc, tok.pad_token_id, batch_size=len(enc))
    alone_sum = alone_n = 0.0
    for e in enc:
        n = sum(1 for t in e.labels[1:] if t != IGNORE_INDEX)
        alone_sum += evaluate_loss(model, [e], tok.pad_token_id, batch_size=1) * n
        alone_n += n
    assert together == pytest.approx(alone_sum / alone_n, rel=1e-4)
    batch = collate(enc[:3], tok.pad_token_id)
    assert batch["attention_mask"][:, 0].all() and (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_mix_share_and_replacement(train_examples):
    natural = train_examples
    distilled = [Example(e.messages, "TEACHER " + e.response, id=e.id, source="distilled") for e in train_examples]
    for mix, want in [(0.0, 0), (0.5, 6), (1.0, 12)]:
        out = mix_examples(natural, distilled, mix=mix, seed=3)
        assert len(out) == 12 and sum(e.source == "distilled" for e in out) == want
        assert len({e.id for e in out}) == 12  # a query is either natural or distilled, not both
    with pytest.raises(ConfigError, match="1.5"):
        mix_examples(natural, distilled, mix=1.5)
    train_set, held = split_holdout(natural, 0.25, seed=0)
    assert held and not ({e.id for e in train_set} & {e.id for e in held})


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_tuner_learns_moves_only_adapter_and_reloads_exactly(method, train_base_dir, train_examples, tmp_path, train_threads):
    examples = [Example(e.messages, STYLE, id=e.id) for e in train_examples]
    model, tok = load_base(train_base_dir)
    base_params = [(p, p.detach().clone()) for p in model.parameters()]
    start: dict[str, torch.Tensor] = {}

    def snapshot(peft_model):
        start.update({n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad})

    out = tmp_path / method
    res = train(train_base_dir, examples, out, method=method, steps=30, base=(model, tok), on_start=snapshot,
                eval_examples=examples[:4], **{**FAST, "lr": LR[method]})
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < 0.95 * first, (first, last)  # the base already knows the text (~2.4 nats): 5% is a real fall
    assert res.eval_loss < res.eval_loss_before
    assert start, "no trainable parameters"
    moved = {n for n, p in res.model.named_parameters() if n in start and not torch.equal(p.detach(), start[n])}
    assert moved == set(start)
    assert all(torch.equal(p, before) for p, before in base_params if not p.requires_grad)
    assert all(not p.requires_grad for p, _ in base_params)

    rec = json.loads((out / "training.json").read_text())
    assert rec["method"] == method and rec["steps"] == 30 and len(rec["data"]["train_hash"]) == 64
    assert rec["metrics"]["eval_loss"] == pytest.approx(res.eval_loss)
    assert not (out / "checkpoints").exists()

    batch = collate(Encoder(tok).encode_all(train_examples[:3]), tok.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        want = res.model(**batch).logits
        loaded, _ = load_trained(train_base_dir, out)
        got = loaded(**batch).logits
    assert torch.allclose(want, got, atol=1e-5)


@pytest.mark.slow
def test_resume_after_interrupt_continues_from_checkpoint(tiny_base_dir, train_examples, tmp_path, train_threads):
    kw = dict(method="lora", steps=12, save_every=5, seed=7, **FAST)
    full = train(tiny_base_dir, train_examples, tmp_path / "full", **kw)

    class Killed(Exception):
        pass

    def kill_at_8(step, loss):
        if step == 8:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(tiny_base_dir, train_examples, out, callback=kill_at_8, **kw)
    assert (out / "checkpoints" / "step-0000005" / "state.pt").exists()
    assert not (out / "training.json").exists()
    seen = []
    res = train(tiny_base_dir, train_examples, out, callback=lambda s, _: seen.append(s), **kw)
    assert res.resumed_from == 5 and seen == list(range(6, 13)) and res.steps == 12
    assert len(res.losses) == 12 and res.losses[:5] == pytest.approx(full.losses[:5])
    # Same seed, same batches, restored optimizer and RNG: the resumed run ends where the full one did.
    assert res.losses[-1] == pytest.approx(full.losses[-1], rel=1e-4)
    assert json.loads((out / "training.json").read_text())["resumed_from"] == 5
    # A checkpoint of other data is not silently continued.
    other = tmp_path / "other"
    with pytest.raises(Killed):
        train(tiny_base_dir, train_examples, other, callback=kill_at_8, **kw)
    with pytest.raises(ConfigError, match="no-resume"):
        train(tiny_base_dir, train_examples[:6], other, **kw)


@pytest.mark.slow
def test_init_adapter_continues_a_trained_prefix_adapter(tiny_base_dir, train_examples, tmp_path, train_threads):
    first = train(tiny_base_dir, train_examples, tmp_path / "a", method="prefix", steps=15, **FAST)
    again = train(tiny_base_dir, train_examples, tmp_path / "b", method="lora", steps=10, init_adapter=tmp_path / "a",
                  eval_examples=train_examples, **FAST)
    assert again.method == "prefix"  # the adapter's own method, not the argument
    tok = load_base(tiny_base_dir)[1]
    first_loss = evaluate_loss(first.model, Encoder(tok).encode_all(train_examples), tok.pad_token_id)
    assert again.eval_loss_before == pytest.approx(first_loss, rel=1e-3)  # it starts where the first run ended
    assert again.eval_loss < again.eval_loss_before


def _choice_examples() -> list[Example]:
    options = ("0. shipping", "1. refund", "2. discount")
    asked = [("When do you ship my parcel?", 0), ("Can I get my money back?", 1), ("Any coupon for me?", 2),
             ("什么时候发货", 0), ("怎么退款", 1), ("有优惠吗", 2)]
    return [Example([{"role": "user", "content": f"What does the customer want?\n{q}\n" + "\n".join(options)}],
                    options[a], id=f"mc{i}", source="task", choices=options, answers=(a,))
            for i, (q, a) in enumerate(asked)]


def _ranked_first(model, tok, examples) -> int:
    from endcloud.end.data import reply_logprobs

    enc, right = Encoder(tok), 0
    model.eval()
    for e in examples:
        scored = reply_logprobs(model, [enc.encode(Example(e.messages, c)) for c in e.choices], tok.pad_token_id)
        means = [t / max(1, n) for t, n in scored]
        right += max(range(len(means)), key=means.__getitem__) in e.answers
    return right


def test_choice_loss_teaches_the_ranking_by_loglik(tmp_path, train_threads):
    """Examples that list candidates also train the ranking they are answered by (the right one's
    mean token log-probability above the others'): on the training items it ends all right, which
    it was not before. On the shipped reader: the fixtures' 64-wide base barely moves under LoRA."""
    from endcloud.end.reader import reader_base
    from endcloud.end.train import choice_loss

    base = reader_base()
    if base is None:
        pytest.skip("no shipped shop reader in this install")
    examples = _choice_examples()
    before = _ranked_first(*load_base(base), examples)
    model, tok = load_base(base)
    encoded = Encoder(tok).encode_all(examples)
    assert all(len(e.choices) == 3 and e.answers for e in encoded)
    with torch.no_grad():
        loss_before = float(choice_loss(model, encoded, tok.pad_token_id))
    res = train(base, examples, tmp_path / "mc", method="lora", steps=40, base=(model, tok),
                **{**FAST, "lr": 1e-2, "batch_size": 6})
    after = _ranked_first(res.model, tok, examples)
    with torch.no_grad():
        loss_after = float(choice_loss(res.model, encoded, tok.pad_token_id))
    assert before < len(examples) and after == len(examples), (before, after)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    rec = json.loads((tmp_path / "mc" / "training.json").read_text())
    assert rec["config"]["choice_weight"] == 1.0


def test_choices_must_name_a_listed_candidate(tiny_tokenizer):
    bad = Example([{"role": "user", "content": "which?"}], "0. a", id="bad", choices=("0. a", "1. b"), answers=(2,))
    with pytest.raises(DataError, match="answers"):
        Encoder(tiny_tokenizer).encode(bad)
    none = Example([{"role": "user", "content": "which?"}], "0. a", id="none", choices=("0. a", "1. b"))
    with pytest.raises(DataError, match="answers"):
        Encoder(tiny_tokenizer).encode(none)
    assert bad.to_json()["choices"] == ["0. a", "1. b"] and "choices" not in Example([], "x").to_json()
    with pytest.raises(ConfigError, match="choice weight"):
        train("unused", [bad], "unused", choice_weight=-1.0)


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_candidates_share_their_prompt_exactly(tiny_base_dir, tiny_tokenizer, method):
    """Scoring candidates with their prompt run once (its key/values shared) gives the scores and
    the gradients of one forward pass per candidate; a prefix model, which feeds its own
    key/values, takes the per-candidate path and gives them too."""
    from peft import get_peft_model

    from endcloud.end.data import candidate_logprob_sums, reply_logprob_sums
    from endcloud.end.tuners import make_peft_config

    torch.manual_seed(0)
    model, tok = load_base(tiny_base_dir)
    model = get_peft_model(model, make_peft_config(method, **({"num_virtual_tokens": 4} if method == "prefix" else {})))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # zero at init: the adapter would change nothing the test could see
            torch.nn.init.normal_(p, std=0.05)
    model.eval()  # no dropout, so the two paths can be compared; gradients flow all the same
    prompt = [{"role": "system", "content": "towel 29.9 cotton; mug 12 ceramic; lamp 45 brass"},
              {"role": "user", "content": "which is cheapest? 1. towel 2. mug 3. lamp"}]
    cands = [Encoder(tok).encode(Example(prompt, c)) for c in ("1. towel", "2. mug is the cheapest", "3. lamp")]
    got = []
    for fn in (reply_logprob_sums, candidate_logprob_sums):
        model.zero_grad()
        sums, counts = fn(model, cands, tok.pad_token_id)
        (sums / counts).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad and p.grad is not None]
        got.append((sums.detach(), counts, grads))
    (s0, n0, g0), (s1, n1, g1) = got
    assert n0.tolist() == n1.tolist() and len(set(n0.tolist())) > 1  # candidates of different lengths
    assert torch.allclose(s0, s1, atol=1e-4), (s0, s1)
    assert len(g0) == len(g1) > 0 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g0, g1))
