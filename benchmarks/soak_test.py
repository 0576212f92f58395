#!/usr/bin/env python
"""Bounded soak test of the HTTP service on the loopback interface: twice the measured capacity, with abuse.

    python benchmarks/soak_test.py --model /tmp/qs/final [--duration 600] [--capacity-seconds 30] [--multiplier 2]

1. Starts ``bayesian-hf serve`` on 127.0.0.1 (a subprocess, default limits) with the given model folder.
2. Capacity: closed-loop clients (``--capacity-concurrency``) send valid ``POST /predict`` requests for
   ``--capacity-seconds``; capacity = answered requests per second.
3. Soak: for ``--duration`` seconds, requests arrive at ``--multiplier`` x capacity (Poisson arrivals, fixed seed),
   in this mix: 60 % valid ``/predict``, 10 % valid ``/batch-predict`` (4 texts), 10 % invalid (malformed JSON,
   wrong types, empty or NUL-only text, duplicate keys, UTF-16, unknown fields), 10 % oversized (65 texts, a 12 KB
   text, a body over the limit, work over ``--max-request-work``), 10 % slow clients on raw sockets (headers or
   body trickled, never finished; the server must drop them).
4. Meanwhile a separate process probes ``GET /health`` every 100 ms, and the server's RSS is sampled every 5 s.

It reports requests sent and answered by kind and status, the 5xx count (goal 0), latency percentiles of the
valid requests that were served and the share refused with 429 ``overloaded`` (load shedding: at twice the
capacity about half the valid requests cannot be served), RSS at start / end / max (goal: flat), and the /health
latency (goal: max < 100 ms). Writes ``benchmarks/results/<name>.{json,md}``. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_test import cpu_name, free_port, load_average, wait_ready  # noqa: E402  (benchmarks/load_test.py)


# --------------------------------------------------------------------------------------------- server
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start_server(model: str, port: int, flags: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(log_path, "wb")
    return subprocess.Popen([sys.executable, "-m", "bayesian_hf.cli", "serve", "--model", model, "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log", *flags], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


# --------------------------------------------------------------------------------------------- health
def health_probe(url: str, stop_at: float, interval: float, out_path: str) -> None:
    """Runs in its own process (its own GIL): GET /health every ``interval`` s until ``stop_at`` (wall clock)."""
    samples = []
    with httpx.Client(timeout=30) as client:
        while time.time() < stop_at:
            t0 = time.perf_counter()
            try:
                status = client.get(url + "/health").status_code
            except httpx.HTTPError as err:
                status = type(err).__name__
            samples.append((time.time(), time.perf_counter() - t0, status))
            time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    Path(out_path).write_text(json.dumps(samples))


# --------------------------------------------------------------------------------------------- traffic
def invalid_bodies() -> list[tuple[str, bytes]]:
    return [
        ("/predict", b'{"text": "unfinished'),
        ("/predict", json.dumps({"text": 5}).encode()),
        ("/predict", json.dumps({"text": "   "}).encode()),
        ("/predict", json.dumps({"text": "\u0000\u200b"}).encode()),
        ("/predict", b'{"text": "a", "text": "b"}'),
        ("/predict", '{"text": "A fine day."}'.encode("utf-16")),
        ("/predict", json.dumps({"text": "ok", "temperature": 2}).encode()),
        ("/batch-predict", json.dumps({"texts": []}).encode()),
        ("/predict", json.dumps({"text": "ok", "num_orderings": 100000}).encode()),
    ]


def oversized_bodies(texts: list[str]) -> list[tuple[str, bytes]]:
    long_text = " ".join(f"Sentence number {i} of a long review." for i in range(300))[:9000]
    return [
        ("/batch-predict", json.dumps({"texts": ["ok"] * 65}).encode()),
        ("/predict", json.dumps({"text": "x" * 12000}).encode()),
        ("/batch-predict", b'{"texts": [' + b",".join([b'""'] * 1_000_000) + b"]}"),
        ("/batch-predict", json.dumps({"texts": [long_text] * 64, "num_orderings": 64}).encode()),
    ]


async def slow_client(port: int, kind: str, hold_s: float) -> str:
    """Opens a connection and trickles a request that never completes; returns how the server ended it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "headers":
            writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        else:
            writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"text\": ")
        await writer.drain()
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), 2.0)
            except asyncio.TimeoutError:
                writer.write(b" " if kind == "body" else b"X")
                await writer.drain()
                continue
            if not data:
                return "closed"
            return data.split(b"\r\n", 1)[0].decode("latin-1")[9:12]  # the status code
        return "held"
    except (ConnectionError, OSError):
        return "reset"
    finally:
        writer.close()


async def soak(url: str, port: int, rate: float, duration: float, texts: list[str], seed: int,
               max_outstanding: int) -> dict:
    rng = random.Random(seed)
    invalid, oversized = invalid_bodies(), oversized_bodies(texts)
    results: list[tuple[str, str, float]] = []  # kind, status, seconds
    skipped = 0
    limits = httpx.Limits(max_connections=max_outstanding, max_keepalive_connections=64)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        outstanding: set[asyncio.Task] = set()

        async def send(kind: str) -> None:
            t0 = time.perf_counter()
            try:
                if kind == "valid":
                    resp = await client.post("/predict", json={"text": rng.choice(texts)})
                elif kind == "valid_batch":
                    resp = await client.post("/batch-predict", json={"texts": rng.sample(texts, 4)})
                elif kind in ("invalid", "oversized"):
                    path, body = rng.choice(invalid if kind == "invalid" else oversized)
                    resp = await client.post(path, content=body, headers=headers)
                else:
                    status = await slow_client(port, "headers" if kind == "slow_headers" else "body", 60)
                    results.append((kind, status, time.perf_counter() - t0))
                    return
                status = str(resp.status_code)
                if resp.status_code == 429:
                    status += ":" + resp.json().get("error", {}).get("code", "")
            except httpx.HTTPError as err:
                status = type(err).__name__
            results.append((kind, status, time.perf_counter() - t0))

        kinds = ["valid"] * 60 + ["valid_batch"] * 10 + ["invalid"] * 10 + ["oversized"] * 10 + \
                ["slow_headers"] * 5 + ["slow_body"] * 5
        started = time.perf_counter()
        next_at = started
        while next_at < started + duration:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += rng.expovariate(rate)
            if len(outstanding) >= max_outstanding:
                skipped += 1
                continue
            task = asyncio.ensure_future(send(rng.choice(kinds)))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        if outstanding:
            await asyncio.wait(outstanding, timeout=180)
        elapsed = time.perf_counter() - started
    return {"results": results, "skipped": skipped, "seconds": elapsed}


async def capacity(url: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    latencies, errors = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for text in texts[:concurrency]:  # warm-up
            await client.post("/predict", json={"text": text})
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await client.post("/predict", json={"text": texts[i % len(texts)]})
                i += concurrency
                if resp.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "answered": len(latencies), "errors": errors,
            "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None}


# --------------------------------------------------------------------------------------------- report
def server_metrics(before: str, after: str) -> dict:
    """What the server itself measured during the soak (differences of its /metrics counters)."""
    from bayesian_hf.serving.metrics import sample_value

    def delta(name: str) -> float:
        return sample_value(after, name) - sample_value(before, name)

    passes = delta("bayesian_hf_forward_passes_total")
    waits = delta("bayesian_hf_queue_wait_seconds_count")
    return {
        "forward_passes": int(passes),
        "mean_texts_per_pass": round(delta("bayesian_hf_batch_size_texts_sum") / passes, 2) if passes else None,
        "mean_forward_ms": round(delta("bayesian_hf_forward_duration_seconds_sum") / passes * 1000, 1) if passes else None,
        "mean_queue_wait_ms": round(delta("bayesian_hf_queue_wait_seconds_sum") / waits * 1000, 1) if waits else None,
        "overloaded_429": int(delta("bayesian_hf_overloaded_total")),
        "request_timeouts_504": int(delta("bayesian_hf_request_timeouts_total")),
    }


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def summarise(run: dict, health: list, rss: list, cap: dict, args: argparse.Namespace, rate: float) -> dict:
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for kind, status, _ in run["results"]:
        by_kind[kind][status] += 1
    statuses = Counter(status for _, status, _ in run["results"])
    five_xx = sum(n for s, n in statuses.items() if s[:1] == "5")
    transport = sum(n for s, n in statuses.items() if not s[:1].isdigit() and s not in ("closed", "held", "reset"))
    valid = [(k, s, t) for k, s, t in run["results"] if k in ("valid", "valid_batch")]
    served = [t for _, s, t in valid if s == "200"]
    health_lat = [lat for _, lat, status in health if status == 200]
    health_bad = sum(1 for _, _, status in health if status != 200)
    return {
        "benchmark": "soak_test",
        "machine": f"CPU, {os.cpu_count()} cores ({cpu_name()}), shared with other jobs",
        "load_average_at_end": load_average(),
        "model": args.model_label or args.model,
        "server_flags": args.server_flags,
        "capacity": cap,
        "multiplier": args.multiplier,
        "offered_rate_rps": round(rate, 2),
        "duration_s": round(run["seconds"], 1),
        "requests_sent": len(run["results"]),
        "client_skipped_at_outstanding_cap": run["skipped"],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "status_counts": dict(statuses),
        "five_xx": five_xx,
        "transport_errors": transport,
        "valid": {"sent": len(valid), "served_200": len(served),
                  "refused_429_overloaded": sum(1 for _, s, _ in valid if s == "429:overloaded"),
                  "served_rps": round(len(served) / run["seconds"], 2),
                  "latency_ms_served": {"p50": percentile(served, 50), "p95": percentile(served, 95),
                                        "p99": percentile(served, 99), "max": percentile(served, 100)}},
        "rss_mb": {"start": rss[0][1] if rss else None, "end": rss[-1][1] if rss else None,
                   "max": max(r[1] for r in rss) if rss else None, "samples": rss},
        "server_metrics": run.get("server_metrics"),
        "health": {"probes": len(health), "failed": health_bad, "p50_ms": percentile(health_lat, 50),
                   "p99_ms": percentile(health_lat, 99), "max_ms": percentile(health_lat, 100),
                   "over_100ms": sum(1 for x in health_lat if x > 0.1)},
    }


def write_markdown(report: dict, path: Path) -> None:
    v, h, r, c = report["valid"], report["health"], report["rss_mb"], report["capacity"]
    goals = [
        ("5xx responses", report["five_xx"], "0", report["five_xx"] == 0),
        ("/health max latency (ms)", h["max_ms"], "< 100", h["max_ms"] is not None and h["max_ms"] < 100 and not h["failed"]),
        ("RSS start -> end (MB)", f"{r['start']} -> {r['end']} (max {r['max']})", "flat",
         r["start"] is not None and r["end"] <= r["start"] * 1.10 + 50),
    ]
    rows = "\n".join(f"| {name} | {value} | {goal} | {'met' if ok else 'MISSED'} |" for name, value, goal, ok in goals)
    kinds = "\n".join(f"| {kind} | {sum(counts.values())} | " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
                      + " |" for kind, counts in report["by_kind"].items())
    text = f"""# Soak test: {report['duration_s']} s at {report['multiplier']}x the measured capacity

Machine: {report['machine']}; load average at the end {report['load_average_at_end']}. Client, health probe and
server share the machine, and other jobs were running: the figures are a lower bound of what the server does alone.

Model: {report['model']}. Server: `bayesian-hf serve` with default limits {report['server_flags'] or ''}.

Capacity (closed loop, {c['concurrency']} clients, {c['seconds']} s of valid `/predict`): **{c['requests_per_second']} req/s**
(p50 {c['p50_ms']} ms). Soak: Poisson arrivals at {report['offered_rate_rps']} req/s for {report['duration_s']} s;
{report['requests_sent']} requests sent ({report['client_skipped_at_outstanding_cap']} not sent: client cap on
outstanding requests).

| goal | measured | target | |
|---|---|---|---|
{rows}

Valid requests: {v['sent']} sent, **{v['served_200']} served** ({v['served_rps']} req/s), {v['refused_429_overloaded']}
refused at once with 429 `overloaded` (load shedding: the queue's predicted wait exceeded `--max-queue-delay`).
Latency of the served ones: p50 {v['latency_ms_served']['p50']} ms, p95 {v['latency_ms_served']['p95']} ms,
**p99 {v['latency_ms_served']['p99']} ms**, max {v['latency_ms_served']['max']} ms.
Server side: {report['server_metrics']}.
/health: {h['probes']} probes, {h['failed']} failed, p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, max {h['max_ms']} ms,
{h['over_100ms']} over 100 ms.

| kind | sent | answers (status: count; slow clients: how the server ended them) |
|---|---|---|
{kinds}

Reproduce: `{report['command']}`
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder to serve, or 'minilm': the load test's model "
                        "(the embedded MiniLM converted with from_bert, untrained head), written to a temporary folder")
    parser.add_argument("--model-label", help="how the report names the model (default: the path)")
    parser.add_argument("--duration", type=float, default=600.0, help="soak seconds (default 600)")
    parser.add_argument("--capacity-seconds", type=float, default=30.0)
    parser.add_argument("--capacity-concurrency", type=int, default=8)
    parser.add_argument("--multiplier", type=float, default=2.0, help="offered rate / measured capacity")
    parser.add_argument("--max-outstanding", type=int, default=256, help="client cap on requests in flight")
    parser.add_argument("--server-flag", dest="server_flags", action="append", default=[],
                        help="extra flag for bayesian-hf serve (repeatable), e.g. --server-flag=--torch-threads=1")
    parser.add_argument("--name", default="soak_test_cpu", help="results file name (without extension)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from bayesian_hf.data import load_exchangeable_reviews

    texts = list(load_exchangeable_reviews(train_size=10, validation_size=0, calibration_size=10, test_size=300,
                                           ood_size=0, seed=1)["test"]["text"])
    log_path = Path(tempfile.mkdtemp(prefix="soak-")) / "server.log"
    if args.model == "minilm":
        from load_test import make_model

        args.model = make_model(log_path.parent / "model")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port, args.server_flags, log_path)
    try:
        wait_ready(url, proc, timeout=300)
        print("server ready; measuring capacity", flush=True)
        cap = asyncio.run(capacity(url, texts, args.capacity_concurrency, args.capacity_seconds))
        rate = max(cap["requests_per_second"], 0.5) * args.multiplier
        print(f"capacity {cap['requests_per_second']} req/s; soaking at {rate:.1f} req/s for {args.duration:g} s",
              flush=True)
        health_out = str(log_path.parent / "health.json")
        stop_at = time.time() + args.duration + 5
        probe = multiprocessing.get_context("spawn").Process(target=health_probe, args=(url, stop_at, 0.1, health_out))
        probe.start()
        rss: list[tuple[float, float]] = []
        t_start = time.time()

        async def sample_rss() -> None:
            while time.time() < stop_at:
                value = rss_mb(proc.pid)
                if value is not None:
                    rss.append((round(time.time() - t_start, 1), value))
                await asyncio.sleep(5)

        async def run_all() -> dict:
            sampler = asyncio.ensure_future(sample_rss())
            out = await soak(url, port, rate, args.duration, texts, args.seed, args.max_outstanding)
            sampler.cancel()
            return out

        before = httpx.get(url + "/metrics", timeout=30).text
        run = asyncio.run(run_all())
        run["server_metrics"] = server_metrics(before, httpx.get(url + "/metrics", timeout=30).text)
        probe.join(60)
        health = json.loads(Path(health_out).read_text())
        Path(health_out).unlink()
        rss.append((round(time.time() - t_start, 1), rss_mb(proc.pid)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    report = summarise(run, health, rss, cap, args, rate)
    report["command"] = "python benchmarks/soak_test.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, RESULTS / f"{args.name}.md")
    print(json.dumps({k: report[k] for k in ("five_xx", "valid", "health")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
