"""Tests of bayesian_hf/data/loading.py: every data path, label rules, carving and errors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from bayesian_hf.data import describe_class_balance, load_text_classification_data


def _frame(n_pos: int, n_neg: int, *, start: int = 0, int_labels: bool = False) -> pd.DataFrame:
    labels = ["pos"] * n_pos + ["neg"] * n_neg
    texts = [f"review number {start + i}. it was {lab}!" for i, lab in enumerate(labels)]
    if int_labels:
        labels = [1 if lab == "pos" else 0 for lab in labels]
    return pd.DataFrame({"text": texts, "label": labels, "extra": np.arange(len(texts))})


def _write(df: pd.DataFrame, path, fmt: str) -> str:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "json":
        df.to_json(path, orient="records")  # a JSON array of objects
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    return str(path)


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_file_formats(tmp_path, cache, fmt):
    train = _write(_frame(60, 40), tmp_path / f"train.{fmt}", fmt)
    test = _write(_frame(10, 10, start=1000), tmp_path / f"test.{fmt}", fmt)
    dsd, label2id = load_text_classification_data(
        train_file=train, test_file=test, cache_dir=cache, validation_split=0.2
    )
    assert label2id == {"neg": 0, "pos": 1}  # sorted unique strings
    assert list(dsd) == ["train", "validation", "test"]
    assert {k: len(v) for k, v in dsd.items()} == {"train": 80, "validation": 20, "test": 20}
    for ds in dsd.values():
        assert ds.column_names == ["text", "label"]
        assert ds.features["label"] == ClassLabel(names=["neg", "pos"])
        assert isinstance(ds[0]["label"], int) and isinstance(ds[0]["text"], str)
    # every row keeps its text-label pairing
    for ds in dsd.values():
        for row in ds:
            assert row["text"].endswith(("pos!" if row["label"] == 1 else "neg!"))


def test_explicit_validation_and_calibration_files(tmp_path, cache):
    files = {
        name: _write(_frame(n, n, start=100 * i), tmp_path / f"{name}.jsonl", "jsonl")
        for i, (name, n) in enumerate([("train", 20), ("val", 5), ("cal", 6), ("test", 7)])
    }
    dsd, _ = load_text_classification_data(
        train_file=files["train"], validation_file=files["val"], calibration_file=files["cal"],
        test_file=files["test"], cache_dir=cache, calibration_split=0.3,
    )
    # splits given as files are used as-is, never carved
    assert {k: len(v) for k, v in dsd.items()} == {
        "train": 40, "validation": 10, "calibration": 12, "test": 14
    }
    assert list(dsd) == ["train", "validation", "calibration", "test"]


def test_mixed_formats_per_split_and_file_lists(tmp_path, cache):
    a = _write(_frame(10, 10), tmp_path / "a.csv", "csv")
    b = _write(_frame(10, 10, start=50), tmp_path / "b.csv", "csv")
    t = _write(_frame(5, 5, start=500), tmp_path / "t.parquet", "parquet")
    dsd, _ = load_text_classification_data(
        train_file=[a, b], test_file=t, cache_dir=cache, validation_split=0
    )
    assert len(dsd["train"]) == 40 and len(dsd["test"]) == 10
    assert "validation" not in dsd


def test_in_memory_datasetdict_with_classlabel_and_renamed_columns():
    feats = Features({"sentence": Value("string"), "y": ClassLabel(names=["bad", "good", "meh"])})
    rng = np.random.default_rng(0)
    ys = rng.integers(0, 3, 90).tolist()
    train = Dataset.from_dict({"sentence": [f"s {i}." for i in range(90)], "y": ys}, features=feats)
    dev = Dataset.from_dict({"sentence": ["a.", "b.", "c."], "y": [0, 1, 2]}, features=feats)
    dsd, label2id = load_text_classification_data(
        dataset=DatasetDict({"train": train, "dev": dev}), text_column="sentence",
        label_column="y",
    )
    assert label2id == {"bad": 0, "good": 1, "meh": 2}  # ClassLabel order, not sorted strings
    assert list(dsd) == ["train", "validation"]  # "dev" is an alias
    assert dsd["train"]["label"][:] == ys
    # a plain Dataset is taken as train
    dsd2, _ = load_text_classification_data(
        dataset=train, text_column="sentence", label_column="y", validation_split=0.2
    )
    assert set(dsd2) == {"train", "validation"}


def test_classlabel_in_eval_split_with_other_order_is_mapped_by_name():
    train = Dataset.from_dict(
        {"text": ["x."] * 4, "label": [0, 1, 0, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}),
    )
    test = Dataset.from_dict(
        {"text": ["y."] * 3, "label": [0, 0, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["pos", "neg"])}),
    )
    dsd, _ = load_text_classification_data(
        dataset=DatasetDict(train=train, test=test), validation_split=0
    )
    assert dsd["test"]["label"][:] == [1, 1, 0]


def test_embedded_dataset():
    dsd, label2id = load_text_classification_data(
        embedded=True,
        embedded_kwargs=dict(train_size=200, validation_size=40, calibration_size=40,
                             test_size=40, ood_size=40, seed=1),
    )
    assert label2id == {"negative": 0, "positive": 1}
    assert list(dsd) == ["train", "validation", "calibration", "test", "ood"]
    assert dsd["train"].column_names == ["text", "label"]
    dsd_x, _ = load_text_classification_data(
        embedded=True, keep_extra_columns=True,
        embedded_kwargs=dict(train_size=100, validation_size=20, calibration_size=0,
                             test_size=20, ood_size=0),
    )
    assert {"clean_label", "noise_rate", "polarities"} <= set(dsd_x["train"].column_names)
    assert dsd_x["train"].column_names[:2] == ["text", "label"]


def test_int_labels_kept_and_label_names(tmp_path, cache):
    path = _write(_frame(30, 20, int_labels=True), tmp_path / "train.csv", "csv")
    dsd, label2id = load_text_classification_data(train_file=path, cache_dir=cache)
    assert label2id == {"0": 0, "1": 1}
    texts = dsd["train"]["text"][:]
    labels = dsd["train"]["label"][:]
    assert all(t.endswith("pos!") == (y == 1) for t, y in zip(texts, labels))
    dsd, label2id = load_text_classification_data(
        train_file=path, cache_dir=cache, label_names=["negative", "positive"]
    )
    assert label2id == {"negative": 0, "positive": 1}
    assert dsd["train"].features["label"].names == ["negative", "positive"]
    with pytest.raises(ValueError, match="out of range"):
        load_text_classification_data(train_file=path, cache_dir=cache, label_names=["only"])


def test_string_labels_label_names_fix_order_and_numeric_strings():
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(40)],
                               "label": ["pos", "neg", "neutral", "pos"] * 10})
    _, label2id = load_text_classification_data(
        dataset=train, label_names=["neg", "neutral", "pos"], validation_split=0
    )
    assert label2id == {"neg": 0, "neutral": 1, "pos": 2}
    _, label2id = load_text_classification_data(dataset=train, validation_split=0)
    assert label2id == {"neg": 0, "neutral": 1, "pos": 2}
    num = Dataset.from_dict({"text": [f"t{i}." for i in range(30)], "label": ["10", "2", "1"] * 10})
    _, label2id = load_text_classification_data(dataset=num, validation_split=0)
    assert list(label2id) == ["1", "2", "10"]  # numeric strings sorted numerically
    with pytest.raises(ValueError, match="not in label_names"):
        load_text_classification_data(dataset=train, label_names=["neg", "pos"])


@pytest.mark.parametrize("seed", [0, 42])
def test_stratified_carving_keeps_proportions_and_is_deterministic(seed):
    n = 1000
    labels = ["a"] * 700 + ["b"] * 220 + ["c"] * 80
    train = Dataset.from_dict({"text": [f"text {i}." for i in range(n)], "label": labels})
    kw = dict(dataset=DatasetDict(train=train), validation_split=0.15, calibration_split=0.1,
              seed=seed)
    dsd, label2id = load_text_classification_data(**kw)
    assert {k: len(v) for k, v in dsd.items()} == {"train": 750, "validation": 150,
                                                   "calibration": 100}
    full = np.bincount([label2id[x] for x in labels], minlength=3) / n
    for split, ds in dsd.items():
        frac = np.bincount(ds["label"][:], minlength=3) / len(ds)
        assert np.all(np.abs(frac - full) <= 0.02), (split, frac, full)
    # disjoint and complete
    parts = [set(ds["text"][:]) for ds in dsd.values()]
    assert sum(map(len, parts)) == n and len(set.union(*parts)) == n
    # deterministic for a seed, different across seeds
    again, _ = load_text_classification_data(**kw)
    for split in dsd:
        assert again[split]["text"][:] == dsd[split]["text"][:]
    other, _ = load_text_classification_data(**{**kw, "seed": seed + 1})
    assert other["validation"]["text"][:] != dsd["validation"]["text"][:]


def test_carving_validation_split_as_count():
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(100)], "label": [0, 1] * 50})
    dsd, _ = load_text_classification_data(dataset=train, validation_split=20)
    assert len(dsd["validation"]) == 20 and len(dsd["train"]) == 80
    with pytest.raises(ValueError):
        load_text_classification_data(dataset=train, validation_split=1.5)


def test_unseen_label_in_test_is_an_error():
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(20)], "label": ["neg", "pos"] * 10})
    test = Dataset.from_dict({"text": ["a.", "b.", "c."], "label": ["neg", "pos", "neutral"]})
    with pytest.raises(ValueError, match=r"'test'.*neutral"):
        load_text_classification_data(dataset=DatasetDict(train=train, test=test))
    test_int = Dataset.from_dict({"text": ["a.", "b.", "c."], "label": [0, 1, 2]})
    train_int = Dataset.from_dict({"text": [f"t{i}." for i in range(20)], "label": [0, 1] * 10})
    with pytest.raises(ValueError, match=r"'test'.*2"):
        load_text_classification_data(dataset=DatasetDict(train=train_int, test=test_int))


def test_single_class_splits_are_errors():
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(20)], "label": ["neg", "pos"] * 10})
    test = Dataset.from_dict({"text": ["a.", "b.", "c."], "label": ["pos"] * 3})
    with pytest.raises(ValueError, match=r"'test'.*'neg': 0, 'pos': 3"):
        load_text_classification_data(dataset=DatasetDict(train=train, test=test))
    one = Dataset.from_dict({"text": [f"t{i}." for i in range(20)], "label": ["pos"] * 20})
    with pytest.raises(ValueError, match="train"):
        load_text_classification_data(dataset=one)


def test_unlabelled_eval_split_is_dropped_but_partial_is_error(caplog):
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(20)], "label": [0, 1] * 10})
    test = Dataset.from_dict({"text": ["a.", "b."], "label": [-1, -1]})
    with caplog.at_level(logging.WARNING, logger="bayesian_hf"):
        dsd, _ = load_text_classification_data(dataset=DatasetDict(train=train, test=test))
    assert "test" not in dsd and "no labels" in caplog.text
    partial = Dataset.from_dict({"text": ["a.", "b.", "c."], "label": [0, 1, -1]})
    with pytest.raises(ValueError, match=r"'test'.*without a label.*row 2"):
        load_text_classification_data(dataset=DatasetDict(train=train, test=partial))


def test_missing_column_lists_available(tmp_path, cache):
    path = _write(_frame(5, 5), tmp_path / "train.csv", "csv")
    with pytest.raises(ValueError, match=r"review.*available columns.*'text', 'label', 'extra'"):
        load_text_classification_data(train_file=path, cache_dir=cache, text_column="review")
    with pytest.raises(ValueError, match="sentiment"):
        load_text_classification_data(train_file=path, cache_dir=cache, label_column="sentiment")


def test_unknown_extension_and_missing_file(tmp_path, cache):
    bad = tmp_path / "train.xlsx"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"unsupported.*\.xlsx"):
        load_text_classification_data(train_file=str(bad), cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_text_classification_data(train_file=str(tmp_path / "nope.csv"), cache_dir=cache)


def test_empty_texts_error_or_drop(tmp_path, cache, caplog):
    df = _frame(10, 10)
    df.loc[3, "text"] = "   "
    df.loc[7, "text"] = ""
    path = _write(df, tmp_path / "train.jsonl", "jsonl")
    with pytest.raises(ValueError, match=r"'train' has 2 empty.*row 3"):
        load_text_classification_data(train_file=path, cache_dir=cache)
    with caplog.at_level(logging.WARNING, logger="bayesian_hf"):
        dsd, _ = load_text_classification_data(
            train_file=path, cache_dir=cache, drop_empty=True, validation_split=0
        )
    assert len(dsd["train"]) == 18 and "dropping 2" in caplog.text
    # CSV reads an empty field as a missing value: same error
    csv = _write(df, tmp_path / "train.csv", "csv")
    with pytest.raises(ValueError, match="empty"):
        load_text_classification_data(train_file=csv, cache_dir=cache)


def test_source_arguments_are_validated(tmp_path):
    train = Dataset.from_dict({"text": ["a.", "b."], "label": [0, 1]})
    with pytest.raises(ValueError, match="exactly one"):
        load_text_classification_data()
    with pytest.raises(ValueError, match="exactly one"):
        load_text_classification_data(dataset=train, embedded=True)
    with pytest.raises(ValueError, match="train_file is required"):
        load_text_classification_data(test_file=str(tmp_path / "t.csv"))
    with pytest.raises(ValueError, match="no 'train' split"):
        load_text_classification_data(dataset=DatasetDict(test=train))


def test_dataset_name_path_goes_through_same_normalisation(monkeypatch):
    import datasets

    raw = DatasetDict(
        train=Dataset.from_dict({"sentence": [f"s{i}." for i in range(40)], "label": [0, 1] * 20}),
        test=Dataset.from_dict({"sentence": ["a.", "b."], "label": [-1, -1]}),
        unsupervised=Dataset.from_dict({"sentence": ["u."], "label": [-1]}),
    )
    calls = []

    def fake_load_dataset(name, config=None, **kw):
        calls.append((name, config))
        return raw

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dsd, label2id = load_text_classification_data(
        dataset_name="glue", dataset_config_name="sst2", text_column="sentence"
    )
    assert calls == [("glue", "sst2")]
    assert list(dsd) == ["train", "validation"]  # unlabelled splits dropped, validation carved
    assert label2id == {"0": 0, "1": 1}


def test_describe_class_balance_and_verbose(capsys):
    train = Dataset.from_dict({"text": [f"t{i}." for i in range(40)],
                               "label": ["neg"] * 30 + ["pos"] * 10})
    dsd, label2id = load_text_classification_data(dataset=train, validation_split=0.25,
                                                  verbose=True)
    printed = capsys.readouterr().out
    table = describe_class_balance(dsd, {v: k for k, v in label2id.items()})
    assert table in printed
    lines = table.splitlines()
    assert lines[0].split() == ["split", "n", "neg", "pos"]
    assert lines[1].split() == ["train", "30", "22", "(73.3%)", "8", "(26.7%)"]
    assert lines[2].split() == ["validation", "10", "8", "(80.0%)", "2", "(20.0%)"]
    assert describe_class_balance(dsd, ["neg", "pos"]) == table
