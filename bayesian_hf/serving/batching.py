"""Micro-batching: texts from concurrent requests share forward passes.

Requests are queued in arrival order. The batcher takes the oldest request and waits until either ``max_batch``
texts are queued or the oldest request has waited ``max_wait_ms``; then it fills one forward pass from the head of
the queue with texts of requests that share its parameters, while the pass stays within ``max_batch`` texts and
``max_pass_work`` token-orderings (texts x padded tokens x effective orderings, when the caller gave the token and
unit counts of its texts). A request that does not fit in one pass runs in several: after each of its passes the
rest of it goes to the back of the queue, so short requests that arrived meanwhile are served in between, and a
request whose caller has gone (timeout, disconnect, shutdown) is dropped before its next pass. Passes run in a
worker thread, so the event loop keeps accepting and parsing requests during inference.

``predict`` applies ``num_orderings``, ``thresholds`` and ``return_cot`` to a whole call, so a pass holds one
parameter set. Results never depend on the other texts of a pass (orderings are seeded per example), so batching
changes nothing in the answers.

:meth:`MicroBatcher.abort` (graceful shutdown past its deadline) fails every queued and running request with
:class:`BatcherClosed` at once; a pass already running in the worker thread finishes, and its result is discarded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .limits_guard import pass_work, request_work
from .metrics import ServiceMetrics

logger = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


class Overloaded(RuntimeError):
    """The queue already holds more work than can finish within ``max_queue_delay_s``: refused at once (429)
    instead of waiting into a timeout. ``retry_after_s``: the predicted wait."""

    def __init__(self, predicted_s: float) -> None:
        super().__init__(f"the server is overloaded: the queued work needs about {predicted_s:.1f} s")
        self.retry_after_s = max(1, math.ceil(predicted_s))


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
    tokens: list[int] | None = None
    units: list[int] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    next: int = 0  # texts before it are done
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.next


Infer = Callable[[list[str], PredictParams], list[dict[str, Any]]]


class MicroBatcher:
    """Collects texts from concurrent requests into forward passes run one at a time in a worker thread.

    Args:
        infer: ``infer(texts, params) -> records``, run in the worker thread; one call = one forward pass.
        max_batch: most texts per forward pass.
        max_wait_ms: most time the oldest queued request waits for company before its forward pass starts.
        max_pass_work: most token-orderings per forward pass (see :func:`~.limits_guard.pass_work`), applied to
            requests submitted with their token and unit counts; ``None`` = texts only.
        max_queue_delay_s: a request whose predicted wait (queued work / the measured token-orderings per second,
            plus its own) exceeds it is refused with :class:`Overloaded`; ``None`` = never (queue until timeout).
        metrics: where forward passes, batch sizes and queue waits are recorded.
    """

    def __init__(
        self, infer: Infer, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_pass_work: int | None = None,
        max_queue_delay_s: float | None = None, metrics: ServiceMetrics | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or (max_pass_work is not None and max_pass_work < 1):
            raise ValueError("max_batch and max_pass_work must be >= 1 and max_wait_ms >= 0")
        self._infer = infer
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_pass_work = max_pass_work
        self.max_queue_delay_s = max_queue_delay_s
        self.work_per_second: float | None = None  # measured over passes: adapts down at once, up slowly
        self._queued_work = 0
        self._running_work = 0
        self.metrics = metrics
        self._pending: collections.deque[_Item] = collections.deque()
        self._running: list[_Item] = []
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
        """Refuse new requests, finish every queued one (unless :meth:`abort` failed them), stop the worker."""
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

    def abort(self, err: Exception | None = None) -> int:
        """Refuse new requests and fail every queued and running one with ``err`` (default :class:`BatcherClosed`)
        now; no further pass starts. Returns how many requests were failed."""
        self._closing = True
        err = err or BatcherClosed("the service is shutting down")
        failed = 0
        for item in self._running:
            if not item.future.done():
                item.future.set_exception(err)
                failed += 1
        failed += self._fail_all(err)
        if self._wakeup is not None:
            self._wakeup.set()
        return failed

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    # ---------------------------------------------------------------------------------------------- submit
    async def submit(self, texts: Sequence[str], params: PredictParams, *, tokens: Sequence[int] | None = None,
                     units: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Queue ``texts`` and wait for their records (in order). ``tokens`` and ``units`` (per text) let the
        batcher keep each forward pass within ``max_pass_work``."""
        if self._closing or self._task is None:
            raise BatcherClosed("the service is shutting down")
        if not texts:
            return []
        if (tokens is None) != (units is None) or (tokens is not None and not len(tokens) == len(units) == len(texts)):
            raise ValueError("tokens and units must both be given, one per text")
        work = request_work(tokens, units, params.num_orderings or 1) if tokens is not None else 0
        if self.max_queue_delay_s is not None and self.work_per_second and self._queued_work + self._running_work > 0:
            predicted = (self._queued_work + self._running_work + work) / self.work_per_second
            if predicted > self.max_queue_delay_s:
                raise Overloaded(predicted)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        item = _Item(list(texts), params, future, list(tokens) if tokens is not None else None,
                     list(units) if units is not None else None)
        self._pending.append(item)
        self._queued_texts += len(item.texts)
        self._queued_work += work
        self._set_depth()
        assert self._wakeup is not None
        self._wakeup.set()
        return await future  # cancelling the caller cancels the future: the rest of the item is then skipped

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
                self.abort()
                raise
            except Exception:  # never let the loop die: requests would hang
                logger.exception("micro-batcher loop error")

    def _fits(self, tokens: list[int], units: list[int], params: PredictParams) -> bool:
        if self.max_pass_work is None or not tokens:
            return True
        return pass_work(tokens, units, params.num_orderings or 1) <= self.max_pass_work

    def _take(self) -> list[tuple[_Item, int, int]]:
        """One pass: slices ``(item, lo, hi)`` of queued requests with the head's parameters, in queue order, within
        ``max_batch`` texts and ``max_pass_work``. Requests whose caller has gone are dropped."""
        while self._pending and self._pending[0].future.done():
            item = self._pending.popleft()
            self._queued_texts -= item.remaining
            self._queued_work -= self._work(item, item.next, len(item.texts))
        if not self._pending:
            self._set_depth()
            return []
        params = self._pending[0].params
        batch: list[tuple[_Item, int, int]] = []
        count, tokens, units = 0, [], []
        full = False
        for item in list(self._pending):
            if item.future.done():
                self._pending.remove(item)
                self._queued_texts -= item.remaining
                self._queued_work -= self._work(item, item.next, len(item.texts))
                continue
            if item.params != params:
                continue
            lo = hi = item.next
            while hi < len(item.texts) and count < self.max_batch:
                if item.tokens is not None and count > 0:  # a pass always takes at least one text
                    trial_t, trial_u = tokens + [item.tokens[hi]], units + [item.units[hi]]
                    if not self._fits(trial_t, trial_u, params):
                        full = True
                        break
                if item.tokens is not None:
                    tokens.append(item.tokens[hi])
                    units.append(item.units[hi])
                hi += 1
                count += 1
            if hi > lo:
                batch.append((item, lo, hi))
                self._queued_texts -= hi - lo
                self._queued_work -= self._work(item, lo, hi)
                self._pending.remove(item)
                if hi < len(item.texts):
                    self._pending.append(item)  # the rest waits behind the requests queued meanwhile
            if full or count >= self.max_batch:
                break
        self._set_depth()
        return batch

    async def _execute(self, batch: list[tuple[_Item, int, int]]) -> None:
        loop = asyncio.get_running_loop()
        params = batch[0][0].params
        texts = [t for item, lo, hi in batch for t in item.texts[lo:hi]]
        items = [item for item, _, _ in batch]
        started = time.monotonic()
        first = [item for item, lo, _ in batch if lo == 0]
        self._running = items
        self._running_work = sum(self._work(item, lo, hi) for item, lo, hi in batch)
        try:
            records = await loop.run_in_executor(self._executor, self._infer, texts, params)
            if len(records) != len(texts):
                raise RuntimeError(f"infer returned {len(records)} records for {len(texts)} texts")
        except Exception as err:  # delivered to every request of the pass
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        finally:
            self._running = []
            self._running_work = 0
        self.forward_passes += 1
        elapsed = time.monotonic() - started
        done_work = sum(self._work(item, lo, hi) for item, lo, hi in batch)
        if done_work and elapsed > 0:
            rate = done_work / elapsed  # a slower pass (the machine got busier) counts at once: never over-admit
            previous = self.work_per_second
            self.work_per_second = rate if previous is None or rate < previous else 0.8 * previous + 0.2 * rate
        if self.metrics is not None:
            self.metrics.observe_batch(len(texts), len(items), time.monotonic() - started,
                                       [started - i.enqueued for i in first])
        offset = 0
        for item, lo, hi in batch:
            part = records[offset : offset + hi - lo]
            offset += hi - lo
            if item.future.done():
                continue
            item.records += part
            item.next = hi
            if item.next == len(item.texts):
                item.future.set_result(item.records)

    @staticmethod
    def _work(item: _Item, lo: int, hi: int) -> int:
        if item.tokens is None or item.units is None or hi <= lo:
            return 0
        return request_work(item.tokens[lo:hi], item.units[lo:hi], item.params.num_orderings or 1)

    def _fail_all(self, err: Exception) -> int:
        failed = 0
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(err)
                failed += 1
        self._queued_texts = 0
        self._queued_work = 0
        self._set_depth()
        return failed

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(max(self._queued_texts, 0))
