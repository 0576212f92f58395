"""Micro-batching: texts from concurrent requests share forward passes.

Requests are queued in arrival order. The batcher takes the oldest request and waits until either ``max_batch``
texts are queued or the oldest request has waited ``max_wait_ms``; then it takes requests from the head of the
queue while they fit in ``max_batch`` texts (a single request larger than that is taken alone and run in chunks of
``max_batch``) and runs them in a worker thread, so the event loop keeps accepting and parsing requests during
inference. While one forward pass runs the next requests queue up, so under load batches fill without waiting.

``predict`` applies ``num_orderings``, ``thresholds`` and ``return_cot`` to a whole call, so requests in one batch
are grouped by those parameters: one forward pass per distinct parameter set (usually one). Results never depend
on the other texts of a batch (orderings are seeded per example), so batching changes nothing in the answers.

A request whose caller gave up (timeout, disconnected client) before its batch started is dropped from the queue;
one whose batch is already running finishes, and its result is discarded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .metrics import ServiceMetrics

logger = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


@dataclass(frozen=True)
class PredictParams:
    """The per-call parameters of ``predict``; requests with equal params can share a forward pass."""

    num_orderings: int | None = None
    thresholds: tuple[tuple[str, float], ...] = ()
    return_cot: bool = False

    @classmethod
    def make(cls, num_orderings: int | None, thresholds: Mapping[str, float], return_cot: bool) -> PredictParams:
        return cls(num_orderings, tuple(sorted((k, float(v)) for k, v in thresholds.items())), bool(return_cot))


@dataclass
class _Item:
    texts: list[str]
    params: PredictParams
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


Infer = Callable[[list[str], PredictParams], list[dict[str, Any]]]


class MicroBatcher:
    """Collects texts from concurrent requests into forward passes run one at a time in a worker thread.

    Args:
        infer: ``infer(texts, params) -> records``, run in the worker thread; one call = one forward pass.
        max_batch: most texts per forward pass.
        max_wait_ms: most time the oldest queued request waits for company before its forward pass starts.
        metrics: where forward passes, batch sizes and queue waits are recorded.
    """

    def __init__(
        self, infer: Infer, *, max_batch: int = 32, max_wait_ms: float = 5.0, metrics: ServiceMetrics | None = None
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self._infer = infer
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.metrics = metrics
        self._pending: collections.deque[_Item] = collections.deque()
        self._queued_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self.forward_passes = 0

    # ------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bayesian-hf-infer")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="bayesian-hf-batcher")

    async def close(self) -> None:
        """Refuse new requests, finish every queued one, stop the worker thread."""
        self._closing = True
        if self._task is None:
            return
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            await self._task
        finally:
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    # ---------------------------------------------------------------------------------------------- submit
    async def submit(self, texts: Sequence[str], params: PredictParams) -> list[dict[str, Any]]:
        """Queue ``texts`` and wait for their records (in order)."""
        if self._closing or self._task is None:
            raise BatcherClosed("the service is shutting down")
        if not texts:
            return []
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        item = _Item(list(texts), params, future)
        self._pending.append(item)
        self._queued_texts += len(item.texts)
        self._set_depth()
        assert self._wakeup is not None
        self._wakeup.set()
        return await future  # cancelling the caller cancels the future: the item is then skipped

    # ------------------------------------------------------------------------------------------------ loop
    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            try:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                deadline = self._pending[0].enqueued + self.max_wait_s
                while self._queued_texts < self.max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch = self._take()
                if batch:
                    await self._execute(batch)
            except asyncio.CancelledError:
                self._fail_all(BatcherClosed("the service is shutting down"))
                raise
            except Exception:  # never let the loop die: requests would hang
                logger.exception("micro-batcher loop error")

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        count = 0
        while self._pending:
            item = self._pending[0]
            if item.future.done():  # the caller gave up while queued
                self._pending.popleft()
                self._queued_texts -= len(item.texts)
                continue
            if batch and count + len(item.texts) > self.max_batch:
                break
            self._pending.popleft()
            self._queued_texts -= len(item.texts)
            batch.append(item)
            count += len(item.texts)
        self._set_depth()
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        groups: dict[PredictParams, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.params, []).append(item)
        loop = asyncio.get_running_loop()
        for params, items in groups.items():
            items = [i for i in items if not i.future.done()]
            if not items:
                continue
            texts = [t for i in items for t in i.texts]
            started = time.monotonic()
            waits = [started - i.enqueued for i in items]
            try:
                records = []
                for lo in range(0, len(texts), self.max_batch):
                    chunk = texts[lo : lo + self.max_batch]
                    t0 = time.monotonic()
                    records += await loop.run_in_executor(self._executor, self._infer, chunk, params)
                    self.forward_passes += 1
                    if self.metrics is not None:
                        self.metrics.observe_batch(len(chunk), len(items) if lo == 0 else 1, time.monotonic() - t0,
                                                   waits if lo == 0 else ())
                if len(records) != len(texts):
                    raise RuntimeError(f"infer returned {len(records)} records for {len(texts)} texts")
            except Exception as err:  # delivered to every request of the group
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(err)
                continue
            offset = 0
            for i in items:
                part = records[offset : offset + len(i.texts)]
                offset += len(i.texts)
                if not i.future.done():
                    i.future.set_result(part)

    def _fail_all(self, err: Exception) -> None:
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(err)
        self._queued_texts = 0
        self._set_depth()

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(max(self._queued_texts, 0))
