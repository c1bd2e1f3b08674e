"""Background investigation workers: bounded concurrency, deadlines, leases.

``concurrency`` worker loops each claim one investigation at a time from the
store, run the investigate callable in a thread, and store the outcome. While
an investigation runs its lease is renewed, so a live replica keeps its work
and a dead one's work is taken over once the lease lapses. An investigation
that raises, or outlives its deadline, is stored as ``failed`` with the
reason; the loop goes on. One that keeps killing its worker (the same row
claimed more than ``max_attempts`` times) is stored as failed instead of
being tried forever.

A stored alert that cannot be read back (written by an older version, or
damaged) is *quarantined*: stored as ``failed`` with an error starting
``quarantined:``, never run, never retried. A worker loop that dies for any
reason is logged and replaced (``correlator_worker_restarts_total``).

With ``isolation="process"`` investigations run in child processes
(:mod:`~correlator.service.isolate`), one per worker, so the engine never
holds the interpreter the webhook is accepted in. Finished investigations
older than ``retention_days`` are pruned hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from correlator.model import Alert
from correlator.service.isolate import ChildDied, ProcessSlot, ProcessSpec
from correlator.service.notify import Notifier
from correlator.service.obs import Metrics
from correlator.service.payload import alert_from_json
from correlator.service.store import QUARANTINED, Job, Store, StoreError

__all__ = ["InvestigateFn", "WorkerPool", "WorkerSettings", "result_to_json"]

log = logging.getLogger("correlator.service.worker")

#: The investigation: takes an alert, returns an object with ``to_json()`` (an
#: :class:`~correlator.model.Investigation`) or a JSON-ready dict.
InvestigateFn = Callable[[Alert], Any]


@dataclass(frozen=True)
class WorkerSettings:
    """How workers run."""

    concurrency: int = 2
    deadline: float = 120.0
    """Seconds one investigation may take before it is stored as failed."""
    lease: float = 30.0
    """Seconds a claim holds without renewal; a dead worker's work resumes after this."""
    poll: float = 1.0
    """Seconds between looks at the store when idle (new local alerts wake workers at once)."""
    max_attempts: int = 3
    owner: str = ""
    """This replica's id in leases (random when empty)."""
    retention_days: float = 30.0
    """Finished investigations received longer ago than this are deleted (0 keeps all)."""
    prune_every: float = 3600.0
    """Seconds between prunes."""


def result_to_json(result: Any) -> dict[str, Any]:
    """The investigate callable's result as JSON-ready data."""
    if isinstance(result, dict):
        return result
    to_json = getattr(result, "to_json", None)
    if callable(to_json):
        data = to_json()
        if isinstance(data, dict):
            return data
    raise TypeError(
        f"the investigate callable returned {type(result).__name__}; it must return an "
        "Investigation (with to_json()) or a dict"
    )


class WorkerPool:
    """Runs investigations from the store until stopped."""

    def __init__(
        self,
        store: Store,
        investigate: InvestigateFn | ProcessSpec,
        settings: WorkerSettings,
        metrics: Metrics,
        tracer: trace.Tracer,
        notifier: Notifier | None = None,
    ) -> None:
        self.store = store
        self.spec = investigate if isinstance(investigate, ProcessSpec) else None
        self.investigate: InvestigateFn | None = (
            None if isinstance(investigate, ProcessSpec) else investigate
        )
        self._slots: list[ProcessSlot] = (
            [ProcessSlot(self.spec, f"worker-{i}") for i in range(settings.concurrency)]
            if self.spec is not None
            else []
        )
        self.settings = settings
        self.owner = settings.owner or f"replica-{uuid.uuid4().hex[:12]}"
        self.metrics = metrics
        self.tracer = tracer
        self.notifier = notifier
        # Extra threads so an investigation abandoned at its deadline does not
        # take a slot from the next one.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency * 2, thread_name_prefix="investigate"
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._notify_tasks: set[asyncio.Task[None]] = set()
        self._prune_task: asyncio.Task[None] | None = None
        self.busy = 0
        self.restarts = 0

    @property
    def running(self) -> bool:
        """True while every worker loop is alive (a dead one is replaced at once)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def start(self) -> None:
        """Start the worker loops (and the pruner) on the running event loop."""
        self._tasks = [self._spawn(i) for i in range(self.settings.concurrency)]
        if self.settings.retention_days > 0:
            self._prune_task = asyncio.create_task(self._prune_loop(), name="prune")

    def _spawn(self, index: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._loop(index), name=f"worker-{index}")
        task.add_done_callback(lambda t: self._died(index, t))
        return task

    def _died(self, index: int, task: asyncio.Task[None]) -> None:
        """Supervisor: a worker loop ended while the pool runs; log it and start another."""
        if self._stopping:
            return
        if task.cancelled():
            why = "cancelled"
        else:
            err = task.exception()
            why = f"{type(err).__name__}: {err}" if err is not None else "returned"
        self.restarts += 1
        self.metrics.worker_restarts.inc()
        log.error("worker died; starting a new one", extra={"worker": index, "problem": why})
        self._tasks[index] = self._spawn(index)

    async def _prune_loop(self) -> None:
        while not self._stopping:
            cutoff = time.time() - self.settings.retention_days * 86400.0
            try:
                removed = await asyncio.to_thread(self.store.prune, cutoff)
            except StoreError as err:
                self.metrics.store_errors.labels("prune").inc()
                log.warning("cannot prune old investigations", extra={"problem": str(err)})
            else:
                if removed:
                    log.info(
                        "pruned old investigations",
                        extra={"removed": removed, "retention_days": self.settings.retention_days},
                    )
            await asyncio.sleep(self.settings.prune_every)

    def wake(self) -> None:
        """Tell idle workers new work is queued."""
        self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, wait up to ``grace`` seconds for running work, then give up.

        Work still running is not lost: its lease lapses and any replica resumes it.
        """
        self._stopping = True
        self._wake.set()
        if self._prune_task is not None:
            self._prune_task.cancel()
            await asyncio.gather(self._prune_task, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._notify_tasks:
            await asyncio.wait(self._notify_tasks, timeout=grace)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for slot in self._slots:
            await asyncio.to_thread(slot.stop)

    async def _ready(self, index: int) -> bool:
        """Whether this worker's process is up (started now if not): claim only then, so
        a claim is not held while a child imports the engine."""
        if not self._slots:
            return True
        slot = self._slots[index % len(self._slots)]
        before = slot.restarts
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, slot.warm)
        except ChildDied as err:
            log.error("worker process cannot start", extra={"worker": index, "problem": str(err)})
            await asyncio.sleep(max(self.settings.poll, 1.0))
            return False
        finally:
            if slot.restarts > before:
                self.metrics.worker_restarts.inc(slot.restarts - before)
        return True

    async def _loop(self, index: int) -> None:
        while not self._stopping:
            if not await self._ready(index):
                continue
            try:
                jobs = await asyncio.to_thread(self.store.claim, self.owner, self.settings.lease, 1)
            except StoreError as err:
                self.metrics.store_errors.labels("claim").inc()
                log.error("cannot claim work", extra={"problem": str(err)})
                jobs = []
            if not jobs:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll)
                continue
            for job in jobs:
                self.busy += 1
                try:
                    await self._run(job, index)
                except Exception as err:  # a bug must not stop the loop: log and go on
                    log.error(
                        "worker error",
                        extra={"investigation": job.id, "problem": f"{type(err).__name__}: {err}"},
                    )
                finally:
                    self.busy -= 1

    async def _renew(self, job: Job) -> None:
        every = max(self.settings.lease / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            try:
                ok = await asyncio.to_thread(
                    self.store.renew, job.id, self.owner, self.settings.lease
                )
            except StoreError as err:
                self.metrics.store_errors.labels("renew").inc()
                log.warning(
                    "cannot renew lease", extra={"investigation": job.id, "problem": str(err)}
                )
                continue
            if not ok:
                log.warning("lease lost", extra={"investigation": job.id})
                return

    async def _quarantine(self, job: Job, problem: str) -> None:
        """Set aside a row that cannot be investigated: failed, with the reason, never retried."""
        error = f"{QUARANTINED}{problem}"[:2000]
        stored = await self._finish(job, "failed", None, error)
        self.metrics.outcomes.labels("quarantined" if stored else "lease_lost").inc()
        log.warning("investigation quarantined", extra={"investigation": job.id, "problem": error})

    async def _run(self, job: Job, index: int = 0) -> None:
        if job.problem is not None:
            await self._quarantine(job, job.problem)
            return
        try:
            alert = alert_from_json(job.alert)
        except Exception as err:
            await self._quarantine(
                job, f"the stored alert cannot be read back ({type(err).__name__}: {err})"
            )
            return
        attrs: dict[str, str | int] = {
            "correlator.investigation.id": job.id,
            "correlator.alert.fingerprint": alert.fingerprint,
            "correlator.alert.name": alert.name,
            "correlator.attempt": job.attempts,
        }
        with self.tracer.start_as_current_span("investigation", attributes=attrs) as span:
            status, result, error = await self._investigate(job, alert, span, index)
            with self.tracer.start_as_current_span("store_result"):
                stored = await self._finish(job, status, result, error)
        outcome = status if stored else "lease_lost"
        self.metrics.outcomes.labels(outcome).inc()
        log.info(
            "investigation finished",
            extra={
                "investigation": job.id,
                "fingerprint": alert.fingerprint,
                "alertname": alert.name,
                "outcome": outcome,
                "attempt": job.attempts,
                "error": error,
            },
        )
        if stored and self.notifier is not None:
            task = asyncio.create_task(self._notify(job.id))
            self._notify_tasks.add(task)
            task.add_done_callback(self._notify_tasks.discard)

    async def _call(self, job: Job, alert: Alert, index: int) -> dict[str, Any]:
        """Run the investigation in this worker's process, or in a thread."""
        if self._slots:
            slot = self._slots[index % len(self._slots)]
            before = slot.restarts
            try:
                answer = await slot.run(job.alert, self.settings.deadline, self._executor)
            finally:
                if slot.restarts > before:
                    self.metrics.worker_restarts.inc(slot.restarts - before)
            if "error" in answer:
                raise RuntimeError(str(answer["error"]))
            return result_to_json(answer.get("result"))
        assert self.investigate is not None
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self.investigate, alert)
        return result_to_json(await asyncio.wait_for(future, timeout=self.settings.deadline))

    async def _investigate(
        self, job: Job, alert: Alert, span: trace.Span, index: int = 0
    ) -> tuple[str, dict[str, Any] | None, str | None]:
        if job.attempts > self.settings.max_attempts:
            return (
                "failed",
                None,
                f"gave up after {job.attempts - 1} attempts: each one stopped its worker "
                "(crash, kill or lost lease) before it finished",
            )
        renew = asyncio.create_task(self._renew(job))
        started = time.perf_counter()
        wall_start = time.time_ns()
        try:
            result = await self._call(job, alert, index)
        except TimeoutError:
            span.set_status(trace.Status(trace.StatusCode.ERROR, "deadline exceeded"))
            return (
                "failed",
                None,
                f"deadline of {self.settings.deadline:g}s exceeded; raise --deadline or the "
                "sources' timeouts",
            )
        except ChildDied as err:
            span.set_status(trace.Status(trace.StatusCode.ERROR, "worker process died"))
            return "failed", None, f"{err}; it is replaced for the next investigation"
        except Exception as err:
            span.record_exception(err)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(err).__name__))
            text = str(err) if isinstance(err, RuntimeError) and self._slots else None
            return "failed", None, text or f"{type(err).__name__}: {err}"
        finally:
            renew.cancel()
            elapsed = time.perf_counter() - started
            self.metrics.stages.labels("investigate").observe(elapsed)
        self._record_stages(result, wall_start)
        return "done", result, None

    def _record_stages(self, result: dict[str, Any], wall_start: int) -> None:
        """Metrics and child spans for the engine's own stages, from its timings."""
        timings = result.get("timings")
        if isinstance(timings, dict):
            at = wall_start
            for stage, seconds in timings.items():
                if not isinstance(seconds, int | float) or seconds < 0:
                    continue
                self.metrics.stages.labels(str(stage)).observe(float(seconds))
                end = at + int(float(seconds) * 1e9)
                self.tracer.start_span(f"stage.{stage}", start_time=at).end(end_time=end)
                at = end
        for gap in result.get("gaps") or []:
            if isinstance(gap, dict):
                self.metrics.backend_errors.labels(str(gap.get("source", "unknown"))).inc()

    async def _finish(
        self, job: Job, status: str, result: dict[str, Any] | None, error: str | None
    ) -> bool:
        for attempt in range(5):
            try:
                return await asyncio.to_thread(
                    self.store.finish, job.id, self.owner, status, result, error
                )
            except StoreError as err:
                self.metrics.store_errors.labels("finish").inc()
                log.error(
                    "cannot store result", extra={"investigation": job.id, "problem": str(err)}
                )
                await asyncio.sleep(0.2 * 2**attempt)
        # The lease lapses and another worker redoes it: nothing is lost.
        return False

    async def _notify(self, inv_id: str) -> None:
        assert self.notifier is not None
        try:
            record = await asyncio.to_thread(self.store.get, inv_id)
            if record is None:
                return
            ok = await self.notifier.send(record.to_json())
        except Exception as err:
            log.warning("notification error", extra={"investigation": inv_id, "problem": str(err)})
            ok = False
        self.metrics.notifications.labels("sent" if ok else "failed").inc()
