"""`bayesian-hf predict`: batch inference over files, end to end on a tiny calibrated model folder.

Row count and order, bad rows, shards + merge, resume after SIGKILL (a real subprocess killed mid-run) and a
2-process ``torchrun`` run, each compared with one uninterrupted single-process run."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import bounded_run
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bayesian_hf.cli import main

REPO = Path(__file__).resolve().parents[2]
BAD = {7: "", 19: "   \n", 44: "\u200b"}  # empty, whitespace-only, nothing to tokenise


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_trained_model) -> str:
    """The session's tiny trained model, calibrated (calibrator + LAC conformal sets) and saved with its tokenizer."""
    from bayesian_hf.evaluation import fit_model_calibration

    trained, tokenizer, data = tiny_trained_model
    model = copy.deepcopy(trained)
    calibration = data["calibration"].select(range(120))
    fit_model_calibration(model, tokenizer, calibration["text"], calibration["label"], conformal_score="lac", seed=0)
    folder = tmp_path_factory.mktemp("predict-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _texts(n: int, seed: int = 0) -> list[str]:
    """Real review texts with shuffled lengths (so length bucketing reorders them inside a part)."""
    from bayesian_hf.data import load_exchangeable_reviews

    data = load_exchangeable_reviews(train_size=0, validation_size=0, calibration_size=0, test_size=n, ood_size=0,
                                     seed=seed)
    rng = random.Random(seed)
    texts = []
    for text in data["test"]["text"]:
        sentences = text.split(". ")
        texts.append(". ".join(sentences[: rng.randint(1, len(sentences))]))
    rng.shuffle(texts)
    return texts


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> tuple[Path, list[dict]]:
    rows = [{"id": f"doc-{i:03d}", "text": t} for i, t in enumerate(_texts(150))]
    for i, text in BAD.items():
        rows[i]["text"] = text
    rows[60]["text"] = None  # JSON null
    rows[61]["text"] = 12345  # a number where text belongs
    path = tmp_path_factory.mktemp("predict-data") / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, rows


@pytest.fixture(scope="module")
def reference(model_dir, data_file, tmp_path_factory) -> pa.Table:
    """One uninterrupted single-process run: the output every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("predict-ref") / "out.parquet"
    assert main(["predict", "--model", model_dir, "--data", str(data_file[0]), "--output", str(out), "--id_column",
                 "id", "--part_size", "32", "--batch_size", "8", "--no_progress"]) == 0
    return pq.read_table(out)


def _run(model_dir, data, out, *extra) -> int:
    return main(["predict", "--model", model_dir, "--data", str(data), "--output", str(out), "--id_column", "id",
                 "--part_size", "32", "--batch_size", "8", "--no_progress", *extra])


def test_rows_order_columns_and_bad_rows(model_dir, data_file, reference, capsys):
    from bayesian_hf.backends import load_for_inference
    from bayesian_hf.batch_inference import NOTHING_TO_TOKENISE, length_buckets
    from bayesian_hf.pipelines import predict

    _, rows = data_file
    table = reference
    assert table.num_rows == len(rows)
    assert table.column("row").to_pylist() == list(range(len(rows)))
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    # bucketing really reorders: inside the first part the batches are not the input order
    first_part = [r["text"] for r in rows[:32] if isinstance(r["text"], str) and r["text"].strip()]
    assert [i for b in length_buckets(first_part, 8) for i in b] != list(range(len(first_part)))

    errors = table.column("error").to_pylist()
    assert errors[7] == "empty text" and errors[19] == "whitespace-only text" and errors[44] == NOTHING_TO_TOKENISE
    assert errors[60] == "missing text (null)" and errors[61] == "text is not a string (int)"
    bad = {7, 19, 44, 60, 61}
    assert {i for i, e in enumerate(errors) if e is not None} == bad
    for column in ("label", "score", "prob_negative", "uncertainty_total", "decision", "prediction_set"):
        values = table.column(column).to_pylist()
        assert all(values[i] is None for i in bad)
        assert all(values[i] is not None for i in range(len(rows)) if i not in bad)

    # every field of pipelines.predict, in input order, equal to predicting the good texts directly
    model, tokenizer = load_for_inference(model_dir)
    good = [i for i in range(len(rows)) if i not in bad]
    direct = predict(model, tokenizer, [rows[i]["text"] for i in good], return_raw_probabilities=True)
    got = table.take(good).to_pylist()
    for record, row in zip(direct, got):
        assert row["label"] == record["label"] and row["decision"] == record["decision"]
        assert row["prediction_set"] == record["prediction_set"] and row["truncated"] == record["truncated"]
        assert row["num_units"] == record["num_units"] and row["calibrated"] == record["calibrated"]
        np.testing.assert_allclose([row["prob_negative"], row["prob_positive"], row["score"], row["raw_prob_negative"],
                                    row["raw_prob_positive"]],
                                   [record["probabilities"]["negative"], record["probabilities"]["positive"],
                                    record["score"], record["raw_probabilities"]["negative"],
                                    record["raw_probabilities"]["positive"]], rtol=0, atol=1e-6)
        np.testing.assert_allclose([row[f"uncertainty_{k}"] for k in ("epistemic", "aleatoric", "total")]
                                   + [row["order_dispersion"]],
                                   [record["uncertainty"][k] for k in ("epistemic", "aleatoric", "total")]
                                   + [record["order_dispersion"]], rtol=0, atol=1e-6)


def test_summary_line_counts_bad_rows(model_dir, data_file, tmp_path, capsys):
    path, rows = data_file
    assert _run(model_dir, path, tmp_path / "out.csv") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{len(rows)} rows" in line and "5 row(s) not classified" in line and "empty text: 1" in line
    assert not (tmp_path / "out.csv.parts").exists()  # merged and cleaned up
    csv = pacsv.read_csv(tmp_path / "out.csv")
    assert csv.num_rows == len(rows) and json.loads(csv.column("prediction_set")[0].as_py())


def test_shards_then_merge_and_batch_size_equal_one_process(model_dir, data_file, reference, tmp_path, capsys,
                                                            monkeypatch):
    path, _ = data_file
    out = tmp_path / "out.parquet"
    assert _run(model_dir, path, out, "--num_shards", "2", "--shard_index", "0") == 0
    assert "still missing" in capsys.readouterr().out and not out.exists()
    # merging before every shard is done: a clear error (exit 2), no file
    assert _run(model_dir, path, out, "--num_shards", "2", "--shard_index", "0", "--merge") == 2 and not out.exists()
    assert "parts are missing" in capsys.readouterr().err
    # the second shard takes its index from a Kubernetes indexed Job's environment, and merges (the last one)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert _run(model_dir, path, out, "--num_shards", "2") == 0
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    assert pq.read_table(out).equals(reference)
    assert pq.read_table(out).schema.metadata == reference.schema.metadata
    # a rerun of the finished job is reported up to date; a different job needs --overwrite
    assert _run(model_dir, path, out) == 0 and "up to date" in capsys.readouterr().out
    assert _run(model_dir, path, out, "--seed", "3") == 2 and "--overwrite" in capsys.readouterr().err
    # a different batch size regroups the batches; predictions do not depend on batch-mates
    other = tmp_path / "bs.parquet"
    assert _run(model_dir, path, other, "--batch_size", "3") == 0
    a, b = pq.read_table(other).to_pylist(), reference.to_pylist()
    assert [r["label"] for r in a] == [r["label"] for r in b] and [r["error"] for r in a] == [r["error"] for r in b]
    np.testing.assert_allclose([r["prob_positive"] or 0.0 for r in a], [r["prob_positive"] or 0.0 for r in b],
                               rtol=0, atol=1e-6)


def _cli(*args: str) -> list[str]:
    return [str(REPO / ".venv/bin/python"), "-m", "bayesian_hf.cli", "predict", *args]


def _threads() -> str:
    """This process's torch threads: subprocesses use the same, because the thread count changes float32
    rounding (by ~1e-7) and the comparisons below are exact."""
    import torch

    return str(torch.get_num_threads())


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(model_dir, data_file, reference, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    flags = ["--model", model_dir, "--data", str(data_file[0]), "--output", str(out), "--id_column", "id",
             "--part_size", "32", "--batch_size", "8", "--no_progress", "--torch_threads", _threads()]
    proc = subprocess.Popen(_cli(*flags), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    parts = out.parent / "out.parquet.parts"
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, right after the first part is on disk
    proc.wait()
    written = list(parts.glob("part-*.parquet"))
    assert proc.returncode == -signal.SIGKILL and 1 <= len(written) < 5 and not out.exists()
    # rerun: the finished parts are skipped, the rest computed, the file merged
    assert main(["predict", *flags]) == 0
    assert f"{5 - len(written)} part(s) written, {len(written)} already done" in capsys.readouterr().out
    assert pq.read_table(out).equals(reference)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(model_dir, data_file, reference, tmp_path):
    path, _ = data_file
    out = tmp_path / "out.parquet"
    cmd = [str(REPO / ".venv/bin/torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "bayesian_hf.cli",
           "predict", "--model", model_dir, "--data", str(path), "--output", str(out), "--id_column", "id",
           "--part_size", "32", "--batch_size", "8", "--no_progress", "--torch_threads", _threads()]
    done = bounded_run.run(cmd, env=_env(), timeout=300)  # a timeout kills torchrun and its ranks
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(done.stdout.strip().splitlines())
    assert lines[0].startswith("shard 0/2:") and "150 rows ->" in lines[0]  # rank 0 waited for rank 1, merged
    assert lines[1].startswith("shard 1/2:") and "rank 0 merges" in lines[1]
    assert pq.read_table(out).equals(reference)
    assert not (tmp_path / "out.parquet.parts").exists()


def test_onnx_export_gives_the_same_rows(model_dir, data_file, reference, tmp_path):
    """`--backend auto` picks ONNX Runtime for an exported folder: same columns, errors, labels and decisions,
    probabilities within float32 rounding of the PyTorch run."""
    pytest.importorskip("onnxruntime")
    from bayesian_hf.onnx_export import export_onnx

    export_onnx(model_dir, tmp_path / "onnx")
    out = tmp_path / "out.parquet"
    assert _run(str(tmp_path / "onnx"), data_file[0], out) == 0
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == reference.schema.remove_metadata()
    assert json.loads(table.schema.metadata[b"bayesian_hf.predict"])["options"]["backend"] == "onnx"
    for column in ("row", "id", "label", "decision", "prediction_set", "num_units", "truncated", "error"):
        assert table.column(column).equals(reference.column(column)), column
    for column in ("prob_negative", "prob_positive", "raw_prob_positive", "uncertainty_total", "order_dispersion"):
        got = np.array(table.column(column).to_pylist(), dtype=float)
        want = np.array(reference.column(column).to_pylist(), dtype=float)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True)
