"""Tests of the embedded "exchangeable reviews" dataset (bayesian_hf/data/synthetic.py)."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import numpy as np
import pytest

from bayesian_hf.data import (
    IN_DOMAINS,
    LABEL_NAMES,
    OOD_DOMAINS,
    domain_vocabulary,
    load_exchangeable_reviews,
    make_exchangeable_reviews,
)
from bayesian_hf.data import synthetic as syn

# ----------------------------------------------------------------------------------------------
# An independent "parser": a sentence's polarity is recovered from its TEXT by matching it against
# the templates, with every slot restricted to its own word list.  If a sentence matched templates
# of two polarities, the label would not be a function of the text.
# ----------------------------------------------------------------------------------------------

_ART = re.compile(r"\b([Aa])n ")


def _norm(s: str) -> str:
    return _ART.sub(r"\1 ", s)


def _alt(words) -> str:
    return "(?:" + "|".join(re.escape(_norm(w)) for w in sorted(words, key=len, reverse=True)) + ")"


def _slot_patterns(spec, domain: str) -> dict[str, str]:
    pats = {
        "noun": _alt(spec.nouns[domain]),
        "pos": _alt(spec.pos_adj),
        "pos2": _alt(spec.pos_adj),
        "neg": _alt(spec.neg_adj),
        "neg2": _alt(spec.neg_adj),
        "intens": _alt(spec.degree),
        "degree": _alt(spec.degree),
        "ordinal": _alt(syn._ORDINALS),
        "span": _alt(syn._SPANS),
    }
    if spec.adverbs:
        pats["adv"] = _alt(spec.adverbs)
    if spec.pos_verbs:
        pats["pverb"] = _alt(spec.pos_verbs)
        pats["nverb"] = _alt(spec.neg_verbs)
    for slot, words in spec.neutral_slots[domain].items():
        pats[slot] = _alt(words)
    return pats


def _compile(template: str, pats: dict[str, str]) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", _norm(template))
    src = "".join(pats[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(src, re.IGNORECASE)


_MATCHERS: dict[str, list[tuple[int, re.Pattern]]] = {}
for _spec, _domains in ((syn._IN_SPEC, IN_DOMAINS), (syn._OOD_SPEC, OOD_DOMAINS)):
    for _d in _domains:
        _p = _slot_patterns(_spec, _d)
        _MATCHERS[_d] = [
            (pol, _compile(t, _p))
            for pol, ts in ((1, _spec.pos_templates), (-1, _spec.neg_templates),
                            (0, _spec.neutral_templates))
            for t in ts
        ]


def sentence_polarity(sentence: str, domain: str) -> int:
    pols = {pol for pol, rx in _MATCHERS[domain] if rx.fullmatch(_norm(sentence))}
    assert len(pols) == 1, f"sentence {sentence!r} matches polarities {pols}"
    return pols.pop()


def label_from_text(text: str, domain: str) -> int:
    total = sum(sentence_polarity(s, domain) for s in syn._split(text))
    assert total != 0
    return int(total > 0)


# ----------------------------------------------------------------------------------------------


def test_schema_and_label_names():
    ds = make_exchangeable_reviews(20, seed=1)
    assert set(ds.column_names) == {
        "text", "label", "clean_label", "noise_rate", "num_sentences", "polarities", "domain"
    }
    assert ds.features["label"].names == LABEL_NAMES == ["negative", "positive"]
    assert ds.features["clean_label"].names == LABEL_NAMES
    row = ds[0]
    assert isinstance(row["text"], str) and isinstance(row["noise_rate"], float)
    assert isinstance(row["polarities"], list) and all(p in (-1, 0, 1) for p in row["polarities"])


def test_deterministic_by_seed():
    a = make_exchangeable_reviews(300, seed=7)
    b = make_exchangeable_reviews(300, seed=7)
    assert a.to_dict() == b.to_dict()
    da = load_exchangeable_reviews(50, 20, 20, 20, 20, seed=3)
    db = load_exchangeable_reviews(50, 20, 20, 20, 20, seed=3)
    for split in da:
        assert da[split].to_dict() == db[split].to_dict()


def test_different_seeds_and_splits_differ():
    a = make_exchangeable_reviews(200, seed=0)["text"][:]
    b = make_exchangeable_reviews(200, seed=1)["text"][:]
    assert a != b
    assert len(set(a) & set(b)) < 5
    dd = load_exchangeable_reviews(300, 300, 300, 300, 0, seed=0)
    texts = {s: dd[s]["text"][:] for s in dd}
    splits = list(texts)
    for i, s in enumerate(splits):
        for t in splits[i + 1:]:
            assert texts[s] != texts[t]
            assert len(set(texts[s]) & set(texts[t])) < 5, (s, t)
    # a different global seed changes every split
    dd2 = load_exchangeable_reviews(300, 300, 300, 300, 0, seed=1)
    for s in dd:
        assert dd2[s]["text"][:] != texts[s]


def test_label_rule_on_clean_labels_and_structure():
    ds = make_exchangeable_reviews(1500, seed=2, min_sentences=1, max_sentences=7)
    for row in ds:
        pols = row["polarities"]
        assert len(pols) == row["num_sentences"]
        assert 1 <= row["num_sentences"] <= 7
        n_polar = sum(p != 0 for p in pols)
        assert n_polar % 2 == 1  # odd => sum never 0
        assert sum(pols) != 0
        assert row["clean_label"] == int(sum(pols) > 0)
        sents = syn._split(row["text"])
        assert len(sents) == row["num_sentences"]
        assert all(s.endswith((".", "!")) for s in sents)
        # the polarity of each sentence is recoverable from its text alone
        assert [sentence_polarity(s, row["domain"]) for s in sents] == pols


def test_hard_and_easy_examples_both_present():
    ds = make_exchangeable_reviews(2000, seed=4)
    margins = Counter()
    for pols in ds["polarities"][:]:
        n_polar = sum(p != 0 for p in pols)
        hard = abs(sum(pols)) == 1 and n_polar >= 3
        margins["hard" if hard else "easy"] += 1
    frac_hard = margins["hard"] / len(ds)
    assert 0.15 < frac_hard < 0.5, margins
    none_hard = make_exchangeable_reviews(500, seed=4, hard_fraction=0.0)
    for pols in none_hard["polarities"][:]:
        assert not (abs(sum(pols)) == 1 and sum(p != 0 for p in pols) >= 3)


def test_observed_flips_match_noise_rates():
    ds = make_exchangeable_reviews(20000, seed=5, noise_rates=(0.0, 0.1, 0.3))
    rate = np.asarray(ds["noise_rate"][:])
    flipped = np.asarray(ds["label"][:]) != np.asarray(ds["clean_label"][:])
    assert set(np.unique(rate)) == {0.0, 0.1, 0.3}
    for r in (0.0, 0.1, 0.3):
        sel = rate == r
        assert sel.sum() > 5000  # roughly uniform over the three rates
        observed = flipped[sel].mean()
        assert abs(observed - r) < 0.02, (r, observed)
    assert flipped[rate == 0.0].sum() == 0


def test_noise_probs_and_custom_rates():
    ds = make_exchangeable_reviews(3000, seed=6, noise_rates=(0.0, 0.5), noise_probs=(0.8, 0.2))
    rate = np.asarray(ds["noise_rate"][:])
    assert abs((rate == 0.5).mean() - 0.2) < 0.03
    clean = make_exchangeable_reviews(500, seed=6, noise_rates=(0.0,))
    assert clean["label"][:] == clean["clean_label"][:]


def test_ood_shares_no_domain_vocabulary():
    vin, vood = domain_vocabulary("in"), domain_vocabulary("ood")
    assert len(vin["nouns"]) >= 90 and len(vin["adjectives"]) >= 60
    assert len(vood["nouns"]) >= 30 and len(vood["adjectives"]) >= 40
    assert not (vin["nouns"] | vin["adjectives"] | vin["verbs"]) & (
        vood["nouns"] | vood["adjectives"] | vood["verbs"]
    )
    # no content word of one side appears as a word/phrase in the other side's TEXTS
    dd = load_exchangeable_reviews(600, 0, 0, 0, 600, seed=0)
    ood_text = " ".join(dd["ood"]["text"][:]).lower()
    in_text = " ".join(dd["train"]["text"][:]).lower()
    in_words = vin["nouns"] | vin["adjectives"] | vin["verbs"]
    ood_words = vood["nouns"] | vood["adjectives"]
    leaked = [w for w in in_words if re.search(rf"\b{re.escape(w.lower())}\b", ood_text)]
    assert not leaked, leaked
    leaked = [w for w in ood_words if re.search(rf"\b{re.escape(w.lower())}\b", in_text)]
    assert not leaked, leaked
    # templates are disjoint too
    assert not set(syn._IN_POS_TEMPLATES + syn._IN_NEG_TEMPLATES + syn._IN_NEUTRAL_TEMPLATES) & set(
        syn._OOD_POS_TEMPLATES + syn._OOD_NEG_TEMPLATES + syn._OOD_NEUTRAL_TEMPLATES
    )
    assert set(dd["ood"]["domain"][:]) == set(OOD_DOMAINS)
    assert set(dd["train"]["domain"][:]) == set(IN_DOMAINS)


def test_neutral_templates_carry_no_polarity():
    polar_slots = {"pos", "pos2", "neg", "neg2", "pverb", "nverb"}
    for spec in (syn._IN_SPEC, syn._OOD_SPEC):
        polar_words = set(spec.pos_adj) | set(spec.neg_adj) | set(spec.pos_verbs) | set(
            spec.neg_verbs)
        for t in spec.neutral_templates:
            assert not polar_slots & set(re.findall(r"\{(\w+)\}", t)), t
            assert not [w for w in polar_words if re.search(rf"\b{re.escape(w)}\b", t)], t
        for t in spec.pos_templates + spec.neg_templates:
            assert t.endswith((".", "!"))


def test_sentence_order_is_exchangeable():
    """Shuffling the sentences of a text leaves the clean label (recomputed from text) intact."""
    dd = load_exchangeable_reviews(400, 0, 0, 0, 200, seed=9)
    rng = random.Random(0)
    for split in ("train", "ood"):
        for row in dd[split]:
            sents = syn._split(row["text"])
            assert label_from_text(row["text"], row["domain"]) == row["clean_label"]
            for _ in range(3):
                perm = sents[:]
                rng.shuffle(perm)
                assert label_from_text(" ".join(perm), row["domain"]) == row["clean_label"]


def test_parser_detects_a_label_change():
    """Guard for the two tests above: flipping one polar sentence changes the parsed polarity."""
    ds = make_exchangeable_reviews(50, seed=11, noise_rates=(0.0,))
    row = next(r for r in ds if 1 in r["polarities"])
    sents = syn._split(row["text"])
    j = row["polarities"].index(1)
    neg = syn._fill(syn._IN_NEG_TEMPLATES[0], random.Random(0), syn._IN_SPEC, row["domain"],
                    syn._IN_NOUNS[row["domain"]][0])
    sents[j] = neg
    assert sentence_polarity(neg, row["domain"]) == -1
    assert sum(sentence_polarity(s, row["domain"]) for s in sents) == sum(row["polarities"]) - 2


def test_split_sizes_and_domains():
    dd = load_exchangeable_reviews(train_size=40, validation_size=10, calibration_size=11,
                                   test_size=12, ood_size=13, seed=0)
    assert list(dd) == ["train", "validation", "calibration", "test", "ood"]
    assert {k: len(v) for k, v in dd.items()} == {
        "train": 40, "validation": 10, "calibration": 11, "test": 12, "ood": 13
    }
    dd0 = load_exchangeable_reviews(10, 0, 0, 5, 0)
    assert list(dd0) == ["train", "test"]
    dd3 = load_exchangeable_reviews(30, 5, 5, 5, 5, min_sentences=3, max_sentences=3)
    assert all(n == 3 for s in dd3 for n in dd3[s]["num_sentences"][:])
    with pytest.raises(TypeError):
        load_exchangeable_reviews(10, domain="ood")


def test_class_balance_default_splits():
    dd = load_exchangeable_reviews(seed=0)
    report = {}
    for split, ds in dd.items():
        for col in ("label", "clean_label"):
            frac = float(np.mean(ds[col][:]))
            report[(split, col)] = round(frac, 3)
            assert 0.4 <= frac <= 0.6, (split, col, frac)
    print("positive fraction per split:", report)


def test_single_domain_and_argument_validation():
    ds = make_exchangeable_reviews(50, domain="movies")
    assert set(ds["domain"][:]) == {"movies"}
    with pytest.raises(ValueError, match="unknown domain"):
        make_exchangeable_reviews(5, domain="cars")
    with pytest.raises(ValueError):
        make_exchangeable_reviews(5, min_sentences=4, max_sentences=2)
    with pytest.raises(ValueError):
        make_exchangeable_reviews(5, noise_rates=(1.5,))
    with pytest.raises(ValueError):
        make_exchangeable_reviews(5, noise_rates=(0.1, 0.2), noise_probs=(1.0,))
    assert len(make_exchangeable_reviews(0)) == 0


def test_fast():
    # CPU time of this process: wall time also counts whatever else a loaded CI machine runs
    t0 = time.process_time()
    make_exchangeable_reviews(3000, seed=0)
    assert time.process_time() - t0 < 1.0
