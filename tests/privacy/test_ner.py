"""The optional NER detector: loads a shop's token-classification model only when configured.

The model here is a tiny randomly initialised BERT saved to a temp folder (no download), with its
classifier fixed to say B-PER for every token: what the detector makes of that is checkable.
"""

from __future__ import annotations

import pytest

from endcloud.errors import ConfigError
from endcloud.privacy import detect
from endcloud.privacy.extra import NER_ENV, active_detectors, use_ner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    d = tmp_path_factory.mktemp("ner")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "zorblat", "quux", "ship", "it"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"},
                     label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    torch.manual_seed(0)
    model = BertForTokenClassification(cfg)
    with torch.no_grad():  # every token: B-PER, whatever the random encoder says
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def with_ner(ner_model, monkeypatch):
    monkeypatch.delenv(NER_ENV, raising=False)
    use_ner(ner_model)
    yield ner_model
    use_ner(None)


def test_off_unless_configured(monkeypatch):
    monkeypatch.delenv(NER_ENV, raising=False)
    use_ner(None)
    assert "ner" not in [d.name for d in active_detectors()]
    assert detect("Zorblat Quux") == []  # no rule knows this name


def test_loads_and_runs_the_configured_model(with_ner):
    assert "ner" in [d.name for d in active_detectors()]
    spans = detect("Zorblat Quux")
    assert spans and all(s.type == "NAME" and s.label == "ner" for s in spans), spans
    assert "".join(s.value for s in spans).replace(" ", "") == "ZorblatQuux"


def test_rules_win_overlaps_with_their_own_type(with_ner):
    # the phone rule's span and type stand; the model's PER guesses fill only what no rule took
    spans = detect("ship it 13800138000")
    assert ("PHONE", "13800138000") in [(s.type, s.value) for s in spans]


def test_a_folder_that_is_not_a_model_fails_naming_the_setting(tmp_path):
    from endcloud.privacy.ner import NerDetector

    with pytest.raises(ConfigError, match=NER_ENV):
        NerDetector(tmp_path)
