"""Prometheus metrics of one app, in a registry of its own (two apps in one process never share counters).

Names (all prefixed ``bayesian_hf_``):

- ``requests_total{endpoint,method,status}`` and ``request_duration_seconds{endpoint}`` (histogram): every HTTP
  request, ``endpoint`` being the route template (``other`` for unknown paths, so junk URLs cannot blow up the
  label set);
- ``in_flight_requests``: requests being handled now;
- ``forward_passes_total`` and ``forward_duration_seconds``: model forward passes run by the micro-batcher;
- ``batch_size_texts`` (histogram): texts per forward pass — with concurrent clients it rises above 1;
- ``batch_requests`` (histogram): requests merged into one forward pass;
- ``queue_wait_seconds`` (histogram): time from a request's arrival at the batcher to the start of its forward;
- ``queue_depth_texts``: texts waiting for a forward pass;
- ``predictions_total{label,decision}``: every prediction returned;
- ``uncertainty_nats{kind}`` (histogram, kind = epistemic / aleatoric / total), ``confidence`` (histogram of the
  returned score), ``order_dispersion`` (histogram);
- ``rate_limited_total``, ``request_timeouts_total``, ``overloaded_total`` (429 ``overloaded``: the queue's
  predicted wait exceeded ``--max-queue-delay``); ``requests_total{status="499"}`` counts clients that left
  before their answer;
- ``model_ready`` (0/1) and ``model_info{model,version,calibrator}`` (constant 1);
- drift, only when the model has a drift reference (updated when ``/metrics`` or ``/drift`` is read):
  ``drift_psi{signal}`` (population stability index of each signal and of the predicted labels, ``signal="label"``),
  ``drift_alert`` (0/1), ``drift_enabled`` (0/1), ``drift_window_samples`` (predictions in the window) and ``drift_label_total_variation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "bayesian_hf_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNCERTAINTY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
DISPERSION_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)


class ServiceMetrics:
    """The collectors of one app and the helpers that update them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(PREFIX + "requests", "HTTP requests by endpoint, method and status code.",
                                ("endpoint", "method", "status"), registry=r)
        self.latency = Histogram(PREFIX + "request_duration_seconds", "HTTP request latency in seconds.",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(PREFIX + "in_flight_requests", "HTTP requests being handled.", registry=r)
        self.shadow_predictions = Counter(PREFIX + "shadow_predictions", "Texts also classified by the shadow "
                                          "model.", registry=r)
        self.shadow_label_disagreements = Counter(PREFIX + "shadow_label_disagreements", "Shadow predictions whose "
                                                  "label differs from the served one.", registry=r)
        self.shadow_decision_disagreements = Counter(PREFIX + "shadow_decision_disagreements", "Shadow "
                                                     "predictions whose decision differs from the served one.",
                                                     registry=r)
        self.shadow_confidence_gap = Histogram(PREFIX + "shadow_confidence_gap", "Absolute difference of the "
                                               "served and shadow confidences.", buckets=(0.01, 0.02, 0.05, 0.1,
                                               0.2, 0.3, 0.5, 1.0), registry=r)
        self.shadow_skipped = Counter(PREFIX + "shadow_skipped", "Requests chosen for the shadow model but skipped "
                                      "because it was still busy (it never queues work).", registry=r)
        self.shadow_errors = Counter(PREFIX + "shadow_errors", "Shadow model failures (responses unaffected).",
                                     registry=r)
        self.forward_passes = Counter(PREFIX + "forward_passes", "Model forward passes run by the micro-batcher.",
                                      registry=r)
        self.forward_duration = Histogram(PREFIX + "forward_duration_seconds",
                                          "Duration of one forward pass (tokenisation + model + formatting).",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram(PREFIX + "batch_size_texts", "Texts per forward pass.", buckets=BATCH_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram(PREFIX + "batch_requests", "Requests merged into one forward pass.",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(PREFIX + "queue_wait_seconds", "Wait from batcher arrival to forward start.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(PREFIX + "queue_depth_texts", "Texts waiting for a forward pass.", registry=r)
        self.predictions = Counter(PREFIX + "predictions", "Predictions returned, by label and decision.",
                                   ("label", "decision"), registry=r)
        self.uncertainty = Histogram(PREFIX + "uncertainty_nats", "Predictive uncertainty (nats) by component.",
                                     ("kind",), buckets=UNCERTAINTY_BUCKETS, registry=r)
        self.confidence = Histogram(PREFIX + "confidence", "Returned (calibrated when available) confidence.",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.order_dispersion = Histogram(PREFIX + "order_dispersion", "Order dispersion of the predictions.",
                                          buckets=DISPERSION_BUCKETS, registry=r)
        self.rate_limited = Counter(PREFIX + "rate_limited", "Requests refused by the rate limit (429).", registry=r)
        self.timeouts = Counter(PREFIX + "request_timeouts", "Requests past the request timeout (504).", registry=r)
        self.overloaded = Counter(PREFIX + "overloaded", "Predictions refused because the queue's predicted wait "
                                  "exceeded --max-queue-delay (429 overloaded).", registry=r)
        self.model_ready = Gauge(PREFIX + "model_ready", "1 once the model is loaded.", registry=r)
        self.model_info = Gauge(PREFIX + "model_info", "Constant 1, labelled with the served model.",
                                ("model", "version", "calibrator"), registry=r)
        self.drift_psi = Gauge(PREFIX + "drift_psi", "Population stability index of a drift signal against the "
                               "reference (calibration data).", ("signal",), registry=r)
        self.drift_enabled = Gauge(PREFIX + "drift_enabled", "1 when the model has a drift reference.", registry=r)
        self.drift_alert = Gauge(PREFIX + "drift_alert", "1 when some drift PSI exceeds the threshold.", registry=r)
        self.drift_window_samples = Gauge(PREFIX + "drift_window_samples", "Predictions in the drift window.",
                                          registry=r)
        self.drift_label_tv = Gauge(PREFIX + "drift_label_total_variation", "Total variation distance between the "
                                    "predicted-label shares of the window and of the reference.", registry=r)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, num_texts: int, num_requests: int, seconds: float, waits: Iterable[float]) -> None:
        self.forward_passes.inc()
        self.forward_duration.observe(seconds)
        self.batch_texts.observe(num_texts)
        self.batch_requests.observe(num_requests)
        for wait in waits:
            self.queue_wait.observe(max(wait, 0.0))

    def observe_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.predictions.labels(label=str(record["label"]), decision=str(record["decision"])).inc()
            self.confidence.observe(float(record["score"]))
            self.order_dispersion.observe(float(record["order_dispersion"]))
            for kind, value in record["uncertainty"].items():
                self.uncertainty.labels(kind=kind).observe(float(value))

    def observe_drift(self, statistics: Mapping[str, Any]) -> None:
        """Set the drift gauges from :func:`bayesian_hf.drift.drift_statistics`."""
        for signal, value in statistics["psi"].items():
            self.drift_psi.labels(signal=signal).set(float(value))
        self.drift_alert.set(1.0 if statistics["alert"] else 0.0)
        self.drift_window_samples.set(statistics["num_samples"])
        tv = statistics["label_shift"]["total_variation"]
        if tv is not None:
            self.drift_label_tv.set(float(tv))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def sample_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples called ``name`` (with at least the given labels) in Prometheus text output; 0 if none.
    A small parser for tests and the load test, not a general one."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def observe_shadow(metrics: "ServiceMetrics", served: list[dict], shadow: list[dict]) -> None:
    """Count the shadow model's disagreements with the served predictions (same texts, same order)."""
    for a, b in zip(served, shadow):
        metrics.shadow_predictions.inc()
        if a["label"] != b["label"]:
            metrics.shadow_label_disagreements.inc()
        if a.get("decision") != b.get("decision"):
            metrics.shadow_decision_disagreements.inc()
        metrics.shadow_confidence_gap.observe(abs(float(a["score"]) - float(b["score"])))
