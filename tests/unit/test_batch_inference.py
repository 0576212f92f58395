"""bayesian_hf.batch_inference without a model: input reading and its errors, shard resolution, bucketing, the
manifest key, and the one-line errors of `bayesian-hf predict`."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bayesian_hf.batch_inference import (
    BatchPredictOptions,
    _describe_mismatch,
    _manifest_key,
    length_buckets,
    model_fingerprint,
    read_input,
    resolve_shard,
    row_error,
)


def test_read_csv_keeps_bad_rows_and_reads_numbers_as_text(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('id,text\n1,"Great. Loved it."\n2,\n3,42\n4,"two\nlines"\n', encoding="utf-8")
    rows = read_input(str(path), "text", "id")
    assert rows.texts == ["Great. Loved it.", "", "42", "two\nlines"] and rows.num_rows == 4
    assert rows.ids.to_pylist() == [1, 2, 3, 4] and len(rows.sha256) == 64
    assert [row_error(t) for t in rows.texts] == [None, "empty text", None, None]


def test_read_jsonl_and_json_array_keep_values_as_read(tmp_path):
    lines = [{"text": "ok.", "id": 1}, {"text": None, "id": "b"}, {"text": 3.5, "id": 2}, {"id": 4}]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n", encoding="utf-8")
    rows = read_input(str(jsonl), "text", "id")
    assert rows.texts == ["ok.", None, 3.5, None]
    assert rows.ids.to_pylist() == ["1", "b", "2", "4"]  # mixed id types are kept as text
    assert [row_error(t) for t in rows.texts] == [None, "missing text (null)", "text is not a string (float)",
                                                  "missing text (null)"]
    array = tmp_path / "in.json"
    array.write_text(json.dumps(lines), encoding="utf-8")
    assert read_input(str(array), "text").texts == rows.texts


def test_read_parquet(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["a.", None, "  "], "key": [10, 11, 12]}), path)
    rows = read_input(str(path), "body", "key")
    assert rows.texts == ["a.", None, "  "] and rows.ids.to_pylist() == [10, 11, 12]
    pq.write_table(pa.table({"body": [1, 2]}), tmp_path / "numbers.parquet")
    with pytest.raises(ValueError, match="holds int64, not text"):
        read_input(str(tmp_path / "numbers.parquet"), "body")


@pytest.mark.parametrize("name,content,error,match", [
    ("missing.csv", None, FileNotFoundError, "does not exist"),
    ("in.txt", "text\nhello\n", ValueError, "unsupported input file extension '.txt'"),
    ("in.csv", "body\nhello\n", ValueError, r"no column 'text' \(pass --text_column\); available: \['body'\]"),
    ("in.jsonl", '{"body": "x"}\n', ValueError, "no column 'text'"),
    ("in.jsonl", '{"text": "x"}\n{"text": \n', ValueError, "line 2 is not valid JSON"),
    ("in.jsonl", '["x"]\n', ValueError, "expected an object"),
    ("in.parquet", "not parquet", ValueError, "not a readable Parquet file"),
    ("in.csv", b"text\nfine\ncaf\xe9 au lait\n", ValueError, r"is not UTF-8 text \(byte 13, line 3"),
    ("in.csv", "", ValueError, "is empty"),
])
def test_input_errors_are_clear(tmp_path, name, content, error, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=match):
        read_input(str(path), "text")


def test_id_column_must_exist(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no column 'doc' \(pass --id_column\)"):
        read_input(str(path), "text", "doc")


def test_resolve_shard_from_flags_and_environment():
    assert resolve_shard(None, None, {}) == resolve_shard(1, None, {})
    assert resolve_shard(4, 3, {}).shard_index == 3
    assert resolve_shard(4, None, {"JOB_COMPLETION_INDEX": "2"}).shard_index == 2
    slurm = resolve_shard(3, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"})
    assert (slurm.shard_index, slurm.source) == (2, "SLURM_ARRAY_TASK_ID")
    rank = resolve_shard(None, None, {"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "1"})
    assert (rank.num_shards, rank.shard_index, rank.distributed) == (4, 1, True)
    with pytest.raises(ValueError, match="needs --shard_index"):
        resolve_shard(2, None, {})
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, 1\]"):
        resolve_shard(2, None, {"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(ValueError, match="drop --num_shards"):
        resolve_shard(2, 0, {"WORLD_SIZE": "2", "RANK": "0"})


def test_length_buckets_group_lengths_and_cover_every_row_once():
    texts = ["x" * n for n in (9, 1, 5, 1, 7, 3, 9, 2)]
    buckets = length_buckets(texts, 3)
    assert buckets == [[1, 3, 7], [5, 2, 4], [0, 6]]
    assert sorted(i for b in buckets for i in b) == list(range(len(texts)))


def test_options_are_checked():
    base = dict(model="m", data="d.csv", output="o.parquet")
    for bad, match in [({"batch_size": 0}, "batch_size"), ({"part_size": 1.5}, "part_size"),
                       ({"backend": "tf"}, "backend"), ({"thresholds": {"accept": 2.0}}, "accept"),
                       ({"max_length": 2}, "max_length")]:
        with pytest.raises(ValueError, match=match):
            BatchPredictOptions(**base, **bad).check()


def test_model_fingerprint_ignores_card_and_mtime_but_not_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 8)
    (tmp_path / "README.md").write_text("card")
    first = model_fingerprint(str(tmp_path))
    (tmp_path / "README.md").write_text("another card")
    (tmp_path / "config.json").touch()
    assert model_fingerprint(str(tmp_path)) == first and first["files"] == ["config.json", "model.safetensors"]
    (tmp_path / "model.safetensors").write_bytes(b"\x01" * 8)
    assert model_fingerprint(str(tmp_path))["sha256"] != first["sha256"]


def test_manifest_key_ignores_paths_and_names_differences():
    manifest = {"input": {"path": "/a/in.csv", "sha256": "s", "num_rows": 3},
                "model": {"path": "/m", "sha256": "f", "files": ["config.json"]},
                "options": {"seed": None, "part_size": 1024}, "num_parts": 1}
    moved = {**manifest, "input": {**manifest["input"], "path": "/mnt/in.csv"},
             "model": {**manifest["model"], "path": "/x"}}
    assert _manifest_key(manifest) == _manifest_key(moved)
    changed = {**manifest, "options": {"seed": 3, "part_size": 1024}}
    assert _manifest_key(changed) != _manifest_key(manifest)
    assert _describe_mismatch(manifest, changed) == "seed None -> 3"


def test_cli_errors_are_one_line(tmp_path, capsys):
    from bayesian_hf.cli import main

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"id2label": {"0": "a", "1": "b"}}')
    data = tmp_path / "in.csv"
    data.write_bytes(b"text\n\xff\xfe bad\n")
    code = main(["predict", "--model", str(tmp_path / "model"), "--data", str(data), "--output",
                 str(tmp_path / "out.parquet")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not UTF-8 text (byte 5, line 2" in err
    assert main(["predict", "--model", str(tmp_path / "nope"), "--data", str(data), "--output", "o.parquet"]) == 2
    assert "model folder" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "model"), "--data", str(data), "--output", "o.xlsx"]) == 2
    assert "unsupported output file extension '.xlsx'" in capsys.readouterr().err


class _FakePredict:
    """Stands in for pipelines.predict: fails a call holding a zero-width-only text (like the real one) or, with
    ``broken``, every call; records the batches it was called with."""

    def __init__(self, broken: bool = False):
        self.broken, self.calls = broken, []

    def __call__(self, model, tokenizer, texts, **kwargs):
        self.calls.append(list(texts))
        if self.broken:
            raise RuntimeError("weights are NaN")
        for i, text in enumerate(texts):
            if not text.strip("\u200b\x00"):
                raise ValueError(f"text {i} has nothing to classify: no token besides the special ones")
        return [{"label": "a", "num_units": 1, "text": t} for t in texts]


def test_predict_rows_isolates_bad_texts_and_restores_order(monkeypatch):
    from bayesian_hf import batch_inference, pipelines

    fake = _FakePredict()
    monkeypatch.setattr(pipelines, "predict", fake)
    texts = ["bbbb.", "\u200b", "a.", "", "\x00", "ccc.", None, "\u200b\u200b", "dd."]
    records, errors = batch_inference.predict_rows(None, None, texts, batch_size=4, predict_kwargs={})
    assert [r and r["text"] for r in records] == ["bbbb.", None, "a.", None, None, "ccc.", None, None, "dd."]
    nothing = batch_inference.NOTHING_TO_TOKENISE
    assert errors == [None, nothing, None, "empty text", nothing, None, "missing text (null)", nothing, None]
    assert fake.calls[0] == ["\u200b", "\x00", "a.", "\u200b\u200b"]  # shortest first: a length bucket
    # a batch made only of texts with nothing to tokenise is marked, not fatal
    records, errors = batch_inference.predict_rows(None, None, ["\u200b"] * 5, batch_size=4, predict_kwargs={})
    assert records == [None] * 5 and errors == [batch_inference.NOTHING_TO_TOKENISE] * 5


def test_predict_rows_raises_when_every_text_fails_for_the_model(monkeypatch):
    from bayesian_hf import batch_inference, pipelines

    monkeypatch.setattr(pipelines, "predict", _FakePredict(broken=True))
    with pytest.raises(RuntimeError, match="weights are NaN"):
        batch_inference.predict_rows(None, None, ["a.", "b.", "c."], batch_size=4, predict_kwargs={})
