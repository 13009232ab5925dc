"""Similarity scorers: each ranks a paraphrase above an unrelated reply (zh and en)."""

from __future__ import annotations

import numpy as np
import pytest

from endcloud.errors import DataError, RegistryError
from endcloud.scoring import SIMILARITY, AutoSimilarity, CharNgramSimilarity, load_similarity, minilm_dir

ZH = ("默认发中通快递哦。", "亲，我们默认使用中通快递发货。", "这款毛巾是纯棉的，20x20厘米。")
EN = ("We ship with ZTO Express by default.", "Our default courier is ZTO Express.", "This towel is pure cotton and 20 by 20 cm.")


def _ranks_paraphrase_first(scorer, ref, para, unrelated, **kw):
    s = scorer.score([ref, ref], [para, unrelated], **kw)
    assert s.shape == (2,) and np.all((0 <= s) & (s <= 1))
    assert s[0] > s[1] + 0.1, s
    return s


def test_char_ngram_zh_ranks_paraphrase_first():
    _ranks_paraphrase_first(CharNgramSimilarity(lang="zh"), *ZH)


def test_char_ngram_with_corpus_idf_ranks_paraphrase_first_and_ignores_spacing():
    corpus = [ZH[0], ZH[1], ZH[2], "亲，在的", "请问有什么可以帮您？"] * 3
    sc = CharNgramSimilarity(lang="zh", corpus=corpus)
    assert sc.name == "char-ngram+idf"
    _ranks_paraphrase_first(sc, *ZH)
    # ECD text is word-segmented with spaces; the same sentence unsegmented is identical.
    assert sc.score(["默认 发 中通 快递 哦。"], [ZH[0]])[0] == pytest.approx(1.0)


def test_char_ngram_en_ranks_paraphrase_first():
    _ranks_paraphrase_first(CharNgramSimilarity(lang="en"), *EN)


def test_minilm_ranks_paraphrase_first():
    _ranks_paraphrase_first(load_similarity("minilm"), *EN)


def test_auto_picks_per_language_and_names_the_model():
    auto = load_similarity("auto")
    assert isinstance(auto, AutoSimilarity)
    a = [EN[0], ZH[0], EN[0], ZH[0]]
    b = [EN[1], ZH[1], EN[2], ZH[2]]
    s = auto.score(a, b)
    assert s[0] > s[2] and s[1] > s[3]
    assert auto.names_for(a, b) == ["minilm", "char-ngram", "minilm", "char-ngram"]
    # the char n-gram score for the Chinese pairs is exactly the zh scorer's
    np.testing.assert_allclose(s[[1, 3]], auto.zh.score([ZH[0], ZH[0]], [ZH[1], ZH[2]]))
    assert auto.name == "auto(en=minilm, zh=char-ngram)"


def test_a_sentence_transformers_directory_loads_by_path():
    sc = load_similarity(str(minilm_dir()))
    assert sc.name == "model"  # the folder's name
    _ranks_paraphrase_first(sc, *EN)


def test_unknown_scorer_lists_valid_names():
    with pytest.raises(RegistryError, match="valid: auto, char-ngram, char-ngram-en, minilm"):
        load_similarity("simbert-large")
    assert SIMILARITY.names() == ["auto", "char-ngram", "char-ngram-en", "minilm"]


def test_bare_string_or_unequal_lists_are_data_errors():
    with pytest.raises(DataError, match="bare string"):
        CharNgramSimilarity().score("a", "b")
    with pytest.raises(DataError, match="equally long"):
        CharNgramSimilarity().score(["a"], ["b", "c"])
