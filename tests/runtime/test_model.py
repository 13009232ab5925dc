"""EndModel: cached decode equals a full forward (base, LoRA, prefix, ptuning-v2), batching,
stopping, seeds, confidence, truncation, and hot swaps under concurrent generate calls."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from endcloud.errors import DataError, ModelError

CONVS = [
    [{"role": "user", "content": "几天发货？"}],
    [{"role": "system", "content": "You are a shop assistant."},
     {"role": "user", "content": "Hello, how can I help you today?"},
     {"role": "assistant", "content": "Returns are accepted within 7 days of delivery."},
     {"role": "user", "content": "Yes, you can get a 10% discount with the coupon SAVE10."}],
    [{"role": "user", "content": "退货请在签收后7天内申请"}],
]
METHODS = ["base", "lora", "prefix", "ptuning-v2"]


pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.fixture(scope="module")
def gen_adapters(tmp_path_factory, tiny_base_dir):
    """Real peft adapters on disk with non-trivial (random) weights, one per method."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfgs = {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"],
                           init_lora_weights=False, task_type="CAUSAL_LM"),
        "prefix": PrefixTuningConfig(num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=32,
                                     task_type="CAUSAL_LM"),
        "ptuning-v2": PrefixTuningConfig(num_virtual_tokens=5, prefix_projection=False, task_type="CAUSAL_LM"),
    }
    root = tmp_path_factory.mktemp("gen-adapters")
    out = {"base": None}
    for name, cfg in cfgs.items():
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
        peft_model = get_peft_model(model, cfg)
        if name == "prefix":  # the projection MLP starts near zero output: make the prefix matter
            with torch.no_grad():
                for p in peft_model.prompt_encoder.parameters():
                    p.add_(torch.randn_like(p) * 0.5)
        peft_model.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def gen_model(tiny_base_dir):
    from endcloud.runtime.model import EndModel

    return EndModel.load(tiny_base_dir, max_input_len=256)


def _reference(base_dir, adapter_dir):
    """The model as transformers/peft load it, for a full forward without any cache."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    if adapter_dir is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).eval()


@pytest.mark.parametrize("method", METHODS)
def test_cached_decode_matches_full_forward(method, gen_model, gen_adapters, tiny_base_dir):
    gen_model.swap_adapter(gen_adapters[method])
    prompts = [gen_model.prompt_ids(c) for c in CONVS]
    assert len({len(p) for p in prompts}) == 3  # unequal lengths: left padding is exercised
    forced = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    fast = gen_model.step_logits(prompts, forced, fast=True)
    slow = gen_model.step_logits(prompts, forced, fast=False)  # transformers forward + DynamicCache
    ref = _reference(tiny_base_dir, gen_adapters[method])
    for r, p in enumerate(prompts):
        ids = torch.tensor([p + forced[r]])
        with torch.no_grad():
            full = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, len(p) - 1:].float()
        assert fast[r].shape == full.shape
        torch.testing.assert_close(fast[r], full, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(slow[r], full, atol=2e-5, rtol=1e-4)
    gen_model.swap_adapter(None)


def test_adapters_change_logits_and_leave_base_untouched(gen_model, gen_adapters):
    prompts = [gen_model.prompt_ids(c) for c in CONVS[:1]]
    forced = [[5, 6]]
    base0 = gen_model.step_logits(prompts, forced)[0]
    for method in METHODS[1:]:
        gen_model.swap_adapter(gen_adapters[method])
        assert gen_model.method == ("lora" if method == "lora" else "prefix")
        assert gen_model.adapter_dir == gen_adapters[method]
        assert (gen_model.step_logits(prompts, forced)[0] - base0).abs().max() > 1e-3
    gen_model.swap_adapter(None)
    assert gen_model.adapter_dir is None
    torch.testing.assert_close(gen_model.step_logits(prompts, forced)[0], base0, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_load_with_adapter_equals_swap(method, gen_model, gen_adapters, tiny_base_dir):
    from endcloud.runtime.model import EndModel

    loaded = EndModel.load(tiny_base_dir, gen_adapters[method])
    gen_model.swap_adapter(gen_adapters[method])
    prompts = [gen_model.prompt_ids(CONVS[0])]
    a = loaded.step_logits(prompts, [[3, 4]])[0]
    b = gen_model.step_logits(prompts, [[3, 4]])[0]
    gen_model.swap_adapter(None)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_by_one_greedy(method, gen_model, gen_adapters):
    gen_model.swap_adapter(gen_adapters[method])
    batch = gen_model.generate(CONVS, temperature=0, max_new_tokens=12)
    single = [gen_model.generate([c], temperature=0, max_new_tokens=12)[0] for c in CONVS]
    gen_model.swap_adapter(None)
    assert [g.text for g in batch] == [g.text for g in single]
    for a, b in zip(batch, single):
        assert a.tokens == b.tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_fast_path_equals_transformers_forward_path(gen_model, tiny_base_dir):
    from endcloud.runtime.model import EndModel

    slow = EndModel.load(tiny_base_dir, fast=False)
    a = gen_model.generate(CONVS, temperature=0, max_new_tokens=10)
    b = slow.generate(CONVS, temperature=0, max_new_tokens=10)
    assert [g.text for g in a] == [g.text for g in b]


def test_seeds_reproducible_and_different(gen_model):
    a = gen_model.generate(CONVS, seed=7, max_new_tokens=16, temperature=1.0, top_p=1.0)
    b = gen_model.generate(CONVS, seed=7, max_new_tokens=16, temperature=1.0, top_p=1.0)
    c = gen_model.generate(CONVS, seed=8, max_new_tokens=16, temperature=1.0, top_p=1.0)
    assert a == b
    assert [g.text for g in a] != [g.text for g in c]


def test_confidence_is_mean_raw_logprob_of_sampled_tokens(gen_model):
    """Recompute each sampled token's log-prob from a full forward at temperature 1."""
    from endcloud.runtime import fastdecode

    prompts = [gen_model.prompt_ids(c) for c in CONVS]
    runner = fastdecode.FastRunner(gen_model.variant.weights)
    toks, lps, ended = fastdecode.decode(runner, prompts, max_new_tokens=6, temperature=0.6, top_p=0.8,
                                         stop_ids=[], generator=torch.Generator().manual_seed(0))
    model = gen_model._base_model
    for p, t, lp in zip(prompts, toks, lps):
        assert len(t) == 6 and len(lp) == 6
        with torch.no_grad():
            logits = model(torch.tensor([p + t])).logits[0, len(p) - 1:-1].float()
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(t)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(lp), want, atol=1e-4, rtol=1e-4)
    for g in gen_model.generate(CONVS, max_new_tokens=6, seed=0):
        assert 0 < g.confidence <= 1
        assert g.confidence == pytest.approx(math.exp(g.logprob))


class _ScriptedRunner:
    """Test double: logits that pick `script[row][step]` (then token 4 forever)."""

    prefix_len = 0

    def __init__(self, script, vocab=16):
        self.script, self.vocab, self.step = script, vocab, 0

    def start(self, batch, total):
        self.step = 0

    def forward(self, ids, pos, valid, all_logits=False):
        out = torch.zeros(len(self.script), 1, self.vocab)
        for r, row in enumerate(self.script):
            out[r, 0, row[self.step] if self.step < len(row) else 4] = 20.0
        self.step += 1
        return out


def test_stops_at_end_of_turn_per_row_and_exits_early():
    from endcloud.runtime import fastdecode

    runner = _ScriptedRunner([[5, 6, 2], [7, 0], [8, 9, 10, 11, 12]])  # 2 and 0 end a turn
    toks, lps, ended = fastdecode.decode(runner, [[1], [1, 3], [1]], max_new_tokens=50, temperature=0, top_p=1,
                                         stop_ids=[0, 2], generator=torch.Generator())
    assert toks[:2] == [[5, 6], [7]]
    assert toks[2][:5] == [8, 9, 10, 11, 12] and len(toks[2]) == 50  # never stopped: ran to the limit
    assert ended == [True, True, False]
    assert [len(x) for x in lps] == [3, 2, 50]  # the stop token's log-prob counts

    runner = _ScriptedRunner([[5, 2], [0]])
    toks, _, ended = fastdecode.decode(runner, [[1], [1]], max_new_tokens=50, temperature=0, top_p=1,
                                       stop_ids=[0, 2], generator=torch.Generator())
    assert toks == [[5], []] and ended == [True, True]
    assert runner.step == 2  # prefill + one decode step: stopped as soon as every row ended


def test_top_p_keeps_only_the_nucleus():
    from endcloud.runtime.fastdecode import sample

    gen = torch.Generator().manual_seed(0)
    peaked = torch.log(torch.tensor([[0.05, 0.85, 0.05, 0.05]])).repeat(64, 1)
    tok, lp = sample(peaked, 1.0, 0.8, gen)
    assert tok.tolist() == [1] * 64
    torch.testing.assert_close(lp, torch.full((64,), math.log(0.85)))
    # A flat distribution over 1000 tokens needs more than the top-k candidates: full-sort branch.
    flat = torch.zeros(2000, 1000)
    flat[:, 500:] = -1e9
    tok, _ = sample(flat, 1.0, 0.8, gen)
    assert int(tok.max()) < 500 and len(set(tok.tolist())) > 300


def test_swap_adapter_under_concurrent_generate(gen_model, gen_adapters):
    errors: list[BaseException] = []
    results: list[int] = []
    stop = threading.Event()

    def worker():
        try:
            while not stop.is_set():
                out = gen_model.generate(CONVS, max_new_tokens=4, seed=1)
                assert len(out) == len(CONVS) and all(0 < g.confidence <= 1 for g in out)
                results.append(len(out))
        except BaseException as e:  # noqa: BLE001 - any failure fails the test
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for ad in ["lora", "prefix", "ptuning-v2", "lora", "base"]:
            gen_model.swap_adapter(gen_adapters[ad])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert len(results) >= 3
    assert gen_model.adapter_dir is None


def test_truncation_keeps_last_user_message(tiny_base_dir):
    from endcloud.runtime.model import EndModel

    m = EndModel.load(tiny_base_dir, max_input_len=60)
    convo = [{"role": "system", "content": "You are a shop assistant."}]
    for i in range(6):
        convo += [{"role": "user", "content": f"Old question {i} about towels"},
                  {"role": "assistant", "content": "This towel is pure cotton, 20x20 cm."}]
    convo.append({"role": "user", "content": "Returns are accepted within 7 days?"})
    ids = m.prompt_ids(convo)
    text = m.tokenizer.decode(ids)
    assert len(ids) <= 60
    assert "Returns are accepted within 7 days?" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "Old question 0" not in text
    # The whole history fits a larger budget unchanged.
    full = EndModel.load(tiny_base_dir, max_input_len=4096)
    assert "Old question 0" in full.tokenizer.decode(full.prompt_ids(convo))
    assert len(m.generate([convo], max_new_tokens=3, seed=0)) == 1


def test_system_argument_replaces_system_message(gen_model):
    ids = gen_model.prompt_ids([{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}],
                               system="You are a shop assistant.")
    text = gen_model.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a shop assistant.<|im_end|>")
    assert "old" not in text


def test_bad_input_raises_clear_errors(gen_model, tmp_path):
    with pytest.raises(DataError, match="role"):
        gen_model.generate([[{"role": "robot", "content": "x"}]])
    with pytest.raises(DataError, match="non-empty"):
        gen_model.generate([[]])
    assert gen_model.generate([]) == []
    with pytest.raises(ModelError, match="does not exist"):
        gen_model.swap_adapter(tmp_path / "missing")
    with pytest.raises(ModelError, match="adapter_config.json"):
        gen_model.swap_adapter(tmp_path)
    assert gen_model.adapter_dir is None  # a failed swap keeps serving what it served


def test_int8_fast_path_is_close_and_shares_base_layers(tiny_base_dir, gen_adapters):
    from endcloud.runtime.model import EndModel

    full = EndModel.load(tiny_base_dir)
    q = EndModel.load(tiny_base_dir, quant="int8")
    assert q._base_fast.quant == "int8" and q._base_fast.nbytes() < 0.5 * full._base_fast.nbytes()
    prompts = [full.prompt_ids(c) for c in CONVS]
    forced = [[5, 6], [7, 8], [9, 10]]
    for a, b in zip(full.step_logits(prompts, forced), q.step_logits(prompts, forced)):
        assert (a - b).abs().max() < 0.05 * a.abs().max()
        assert (a - b).abs().max() > 0  # really quantized
    q.swap_adapter(gen_adapters["lora"])
    # LoRA touched q/v/gate in every layer; the o/down projections stay the base's int8 tensors.
    assert q.variant.weights.layers[0].wo is q._base_fast.layers[0].wo
    assert q.variant.weights.layers[0].wqkv is not q._base_fast.layers[0].wqkv
    with pytest.raises(ModelError, match="quant"):
        EndModel.load(tiny_base_dir, quant="int3")
