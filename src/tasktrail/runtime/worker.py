"""The worker part of a :class:`~tasktrail.TaskManager`: it claims tasks and runs them.

* **Claims** are made by the store inside its write transaction (see
  :mod:`tasktrail.store._claim`): the worker asks for as many tasks as it has free slots,
  and gets them already claimed. One claim is in flight at a time; a launch in this process
  and an attempt that ends each send a claim in the same commit as their own write, so a
  task can be created, claimed and started in one commit, and the next one claimed in the
  commit that records the last one's outcome.
* **Attempts** write only under their claim: every append names (worker, attempt) and the
  store refuses it once the task was re-queued, claimed again or finished by someone
  else (:class:`~tasktrail.AttemptSupersededError`). The sweep stops an attempt that lost
  its task, and a worker that finds it was paused for longer than its lease checks every
  attempt before doing anything else.
* **Liveness** of other workers is judged by :class:`~tasktrail.runtime._recovery.Leases`
  (this worker's monotonic clock), and every background loop survives a storage error: it
  logs, pauses and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Collection, Coroutine
from typing import Any, Final

from tasktrail._crashpoints import crash_point
from tasktrail.errors import (
    AttemptSupersededError,
    CorruptDatabaseError,
    IllegalTransitionError,
    StorageError,
    StoreClosedError,
    TasktrailError,
    VersionConflictError,
)
from tasktrail.events import (
    Event,
    NewEvent,
    TaskCancelled,
    TaskFailed,
    TaskRequeued,
)
from tasktrail.ids import random_hex
from tasktrail.lifecycle import ACTIVE_STATES
from tasktrail.projection import Task
from tasktrail.runtime._aio import first_of
from tasktrail.runtime._attempt import Abandoned, Attempt
from tasktrail.runtime._notify import Notifier
from tasktrail.runtime._recording import Recorder, tried_again
from tasktrail.runtime._recovery import Identity, Leases, recover_orphans
from tasktrail.runtime._scheduler import check_attempt, deadline_breach
from tasktrail.runtime._settings import WorkerSettings
from tasktrail.runtime.clock import Clock
from tasktrail.runtime.context import RunContext, Runner
from tasktrail.runtime.registry import as_runner
from tasktrail.store import EventStore
from tasktrail.store._claim import ClaimRequest, ClaimResult

__all__ = ["Worker"]

_log = logging.getLogger(__name__)

_UNLIMITED_SLOTS: Final = 512
"""Tasks claimed at once by a worker without ``max_running``."""
_IDLE_CLAIM: Final = 1.0
"""Seconds between two claims of a worker that heard of no change (a missed signal)."""


class Worker:
    """Claims and runs the tasks of the agents registered on it (see the module doc)."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        settings: WorkerSettings,
        *,
        on_written: Callable[[Task], None],
        worker_id: str | None,
        task_ids: Collection[str] | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self._on_written = on_written
        self.here = Identity.here()
        self.worker_id = worker_id or f"{self.here.host}:{os.getpid()}:{random_hex(3)}"
        self._recorder = Recorder(store, self.worker_id, on_written)
        self.task_ids = None if task_ids is None else frozenset(task_ids)
        self.runners: dict[str, Runner] = {}
        self.running: dict[str, Attempt] = {}
        self._finishing = 0
        self._claim_lock = asyncio.Lock()
        self._claim_again = False
        self._next_at: float | None = None
        self._wake = asyncio.Event()
        self._leases = Leases()
        self._notifier = Notifier(store, clock, settings.poll_interval)
        self._abandoned = Abandoned()
        self._group: asyncio.TaskGroup | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._agents_changed = False
        self._closing = False
        self.failed = asyncio.Event()
        """Set when the worker stopped on an error no retry can mend (see ``failure``)."""
        self.failure: TasktrailError | None = None
        self._last_tick = self._last_beat = self._last_sweep = self._last_recovery = -math.inf
        self._last_claim = -math.inf
        self._stale = True

    # -- runners and callbacks ------------------------------------------------------------------

    def register(self, agent: str, runner: Runner | Callable[[RunContext], Any]) -> None:
        """Run tasks of ``agent`` with ``runner`` (see :func:`~.registry.as_runner`)."""
        self.runners[agent] = as_runner(agent, runner)
        self._agents_changed = True
        self.wake()

    def serves(self, task: Task) -> bool:
        """Whether this worker may start ``task`` (its agent has a runner here)."""
        if task.agent not in self.runners:
            return False
        return self.task_ids is None or task.id in self.task_ids

    def _start_loop(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        assert self._group is not None
        self._loops.append(self._group.create_task(loop, name=f"tasktrail-{name}"))

    def wake(self) -> None:
        """Run a scheduler round soon (something changed here)."""
        self._stale = True
        self._wake.set()

    # -- starting and stopping -----------------------------------------------------------------

    async def start(self, group: asyncio.TaskGroup) -> None:
        """Sign on, recover what dead workers left, start the loops (in ``group``)."""
        self._group = group
        await self._sign_on()
        await self.recover()
        self._start_loop(self._schedule_forever(), "scheduler")
        self._start_loop(self._notifier.notify_parents_forever(), "parents")

    async def _sign_on(self) -> None:
        self._agents_changed = False
        await self.store.register_worker(
            self.worker_id, host=self.here.host, pid=os.getpid(), agents=self.runners,
            pid_namespace=self.here.pid_namespace, boot_id=self.here.boot_id,
        )  # fmt: skip
        self._last_beat = self._last_recovery = self._last_tick = self.clock.monotonic()

    async def stop(self) -> None:
        """Stop the loops and every attempt (each is re-queued); at most ``cancel_grace``
        per runner."""
        self._closing = True
        for loop in self._loops:
            loop.cancel()
        async with self._claim_lock:  # a claim in flight spawns its attempts first
            pass
        runs = list(self.running.values())
        for run in runs:
            run.stop("shutdown", "the worker is shutting down")
        for run in runs:
            await run.done.wait()
        self._abandoned.cancel_all()

    async def sign_off(self) -> None:
        """Re-queue tasks claimed here but never run, and record the clean stop."""
        try:
            await self.store.drain()  # a claim sent before the scheduler stopped
            for task in await self._mine_not_running():
                event: Event = TaskCancelled() if task.cancel_requested else TaskRequeued()
                with contextlib.suppress(VersionConflictError, IllegalTransitionError):
                    await self._append(task, event, "the worker shut down before the attempt began")
            await self.store.stop_worker(self.worker_id)
        except StoreClosedError:
            pass
        except StorageError as err:
            _log.warning("worker %s could not sign off cleanly: %s", self.worker_id, err)

    async def _mine_not_running(self) -> list[Task]:
        active = await self.store.list_tasks(state=ACTIVE_STATES)
        return [t for t in active if t.worker_id == self.worker_id and t.id not in self.running]

    async def _append(self, task: Task, event: Event, reason: str) -> Task:
        result = await self.store.append(
            task.id, [NewEvent(event, actor="system", reason=reason)], expected_version=task.version
        )
        self._on_written(result.task)
        return result.task

    # -- the scheduler -------------------------------------------------------------------------

    async def _schedule_forever(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self._round(forced=False)
                failures = 0
            except StoreClosedError:
                return
            except CorruptDatabaseError as err:  # no retry can help: stop, and say why
                _log.error("worker %s stops: %s", self.worker_id, err)
                self.failure = err
                self.failed.set()
                return
            except TasktrailError as err:
                failures += 1
                pause = min(
                    self.settings.poll_interval * 2 ** min(failures, 6),
                    self.settings.lease_timeout / 3,
                )
                _log.warning(
                    "worker %s: a round failed (%s); again in %g s", self.worker_id, err, pause
                )
                await self.clock.sleep(pause)
                continue
            await first_of(self._wake.wait(), self._changed(), self.clock.sleep(self._pause()))

    async def _changed(self) -> None:
        """Return when another process may have committed (the next round claims), or
        after the next pause; a store that cannot tell (busy) is simply waited out."""
        try:
            if await self.store.wait_for_change(self._pause()):
                self._stale = True
        except TasktrailError:
            self._stale = True
            await self.clock.sleep(self._pause())

    def _pause(self) -> float:
        """Seconds until the next round is due: the poll interval, the next heartbeat, or
        the next scheduled start, whichever comes first."""
        pause = min(self.settings.poll_interval, self.settings.lease_timeout / 3)
        if self._next_at is not None:
            pause = min(pause, max(0.0, self._next_at - self.clock.time()))
        return pause

    async def tick(self) -> None:
        """One scheduler round: a check after a pause; the heartbeat when due; every
        ``poll_interval`` a sweep (deadlines, cancels and takeovers from elsewhere, output
        flushes) and, every ``lease_timeout / 2``, recovery; then claims.

        The manager runs it every ``poll_interval`` and on every change; tests with a fake
        clock may call it directly (then it always claims).
        """
        await self._round(forced=True)

    async def _round(self, *, forced: bool) -> None:
        """A round. Claims are sent only when something may have changed (a write here, a
        commit of another process, a scheduled start come due) or, as a fallback, every
        :data:`_IDLE_CLAIM` seconds: an idle worker does not take the write lock for
        nothing at every poll."""
        now = self.clock.monotonic()
        paused = now - self._last_tick
        self._last_tick = now
        if paused > self.settings.lease_timeout:
            _log.warning(
                "worker %s was paused for %.0f s, longer than its lease of %g s: checking "
                "that its %d attempt(s) still hold their tasks",
                self.worker_id, paused, self.settings.lease_timeout, len(self.running),
            )  # fmt: skip
            self._last_beat = self._last_sweep = -math.inf
        if self._agents_changed:
            await self._sign_on()
        elif now - self._last_beat >= self.settings.lease_timeout / 3:
            await self.store.heartbeat(self.worker_id)
            self._last_beat = now
        if now - self._last_sweep >= self.settings.poll_interval:
            self._last_sweep = now
            await self._sweep(now)
        due = self._next_at is not None and self._next_at <= self.clock.time()
        if forced or due or self._stale or now - self._last_claim >= _IDLE_CLAIM:
            self._stale = False
            self._last_claim = now
            await self.claim(wait=True)

    def room(self) -> int:
        """Slots free here (an attempt recording its outcome counts as free)."""
        busy = len(self.running) - self._finishing
        if self.settings.max_running is None:
            return _UNLIMITED_SLOTS
        return self.settings.max_running - busy

    def claim_soon(self) -> None:
        """Claim in a task of its own, which sends its request before the event loop next
        runs the commit loop: a write made right after this call shares its commit. While
        a claim is in flight, it only asks that claim for another round."""
        if self._claim_lock.locked():
            self._claim_again = True
        elif self._group is not None and not self._closing:
            self._group.create_task(self._claim_quietly(), name="tasktrail-claim")

    async def _claim_quietly(self) -> None:
        try:
            await self.claim()
        except TasktrailError as err:  # the scheduler's next round tries again
            _log.warning("worker %s: a claim failed: %s", self.worker_id, err)
            self.wake()

    async def claim(self, *, wait: bool = False) -> None:
        """Claim as many tasks as there are free slots, and start them. One claim is in
        flight at a time; a call meanwhile asks for another round once it is back (or,
        with ``wait``, waits for it and then makes its own)."""
        if self._claim_lock.locked() and not wait:
            self._claim_again = True
            return
        async with self._claim_lock:
            while True:
                self._claim_again = False
                slots = self.room()
                if slots <= 0 or not self.runners or self._closing:
                    return
                result = await self._send_claim(
                    ClaimRequest(
                        worker_id=self.worker_id, slots=slots, now=self.clock.time(),
                        agents=frozenset(self.runners), limits=self.settings.limits,
                        task_ids=self.task_ids, start_agents=self._start_agents(),
                        exclude=frozenset(self.running),
                    )
                )  # fmt: skip
                crash_point("runtime.after_claim")
                self._next_at = result.next_at
                for task in result.tasks:
                    self._spawn(task)
                if not self._claim_again:
                    return

    def _start_agents(self) -> frozenset[str]:
        """Agents whose runners do not report their start: a claim records it."""
        return frozenset(
            agent for agent, runner in self.runners.items()
            if not getattr(runner, "manages_start", False)
        )  # fmt: skip

    async def _send_claim(self, request: ClaimRequest) -> ClaimResult:
        """``store.claim(request)``; after a storage error (the commit may have happened
        before it) the same request is sent again, and answered with what it claimed."""

        async def send(again: bool) -> ClaimResult:
            return await self.store.claim(dataclasses.replace(request, retry=again))

        return await tried_again(send, f"worker {self.worker_id}: a claim")

    # -- one attempt ---------------------------------------------------------------------------

    def _spawn(self, task: Task) -> None:
        assert self._group is not None

        async def append(task_id: str, events: list[Event], reason: str | None) -> Task:
            return await self._recorder.append(run, events, reason)

        _log.info("task %s: attempt %d of %s starts", task.id, task.attempt, task.agent)
        grace = self.settings.cancel_grace
        ctx = RunContext(task, append=append, clock=self.clock, cancel_grace=grace)
        run = Attempt(
            ctx, clock=self.clock, grace=grace, started_at=self.clock.monotonic(),
            on_abandon=self._abandoned.add,
        )  # fmt: skip
        self.running[task.id] = run
        if self._closing:  # claimed while the worker stops: re-queued at once
            run.stop("shutdown", "the worker is shutting down")
        self._group.create_task(self._execute(run), name=f"tasktrail-run:{task.id}")

    async def _execute(self, run: Attempt) -> None:
        task = run.ctx.task
        try:
            outcome, reason = await run.run(
                self.runners.get(task.agent), backoff=self.settings.retry_backoff
            )
            if outcome is not None:
                crash_point("runtime.before_finish")
                self._finishing += 1
                try:
                    self.claim_soon()  # the next claim goes in the same commit as the outcome
                    await self._recorder.record(run, outcome, reason)
                finally:
                    self._finishing -= 1
                crash_point("runtime.after_finish")
        except AttemptSupersededError as err:
            # A cancel or finish from elsewhere is routine; another attempt holding the
            # task means this one was taken for dead: that deserves a warning.
            level = logging.INFO if run.stop_reason == "lost" else logging.WARNING
            _log.log(level, "task %s: %s", task.id, err)
        except TasktrailError as err:
            _log.warning(
                "task %s: attempt %d could not record its end: %s", task.id, task.attempt, err
            )
            try:
                await self._recorder.settle(run)
            except TasktrailError as settle_error:
                _log.warning(
                    "task %s: it could not be failed either (%s); recovery will decide",
                    task.id, settle_error,
                )  # fmt: skip
        finally:
            run.ctx.end()
            self.running.pop(task.id, None)
            run.done.set()
            self.wake()

    # -- sweeps and recovery -------------------------------------------------------------------

    async def _sweep(self, now: float) -> None:
        """Deadlines, cancel requests and takeovers from elsewhere, output flushes, recovery.

        Pending tasks past a deadline recorded in them any worker may fail (the append is
        optimistic); a running attempt only its own worker stops.
        """
        wall = self.clock.time()
        for task in await self.store.expired_tasks(now=wall, limit=500):
            breach = deadline_breach(task, now=wall)
            if breach is not None:
                with contextlib.suppress(VersionConflictError, IllegalTransitionError):
                    await self._append(task, TaskFailed(error=breach[1]), breach[1])
        if self.running:
            runs = list(self.running.items())  # attempts spawned during the read are not in it
            current = {t.id: t for t in await self.store.get_tasks([i for i, _ in runs])}
            for task_id, run in runs:
                self._check(run, current.get(task_id), now, wall)
                if run.ctx.flush_due():
                    try:
                        await run.ctx.flush()
                    except TasktrailError as err:  # kept: the next flush tries again
                        _log.warning("task %s: writing its output failed: %s", task_id, err)
        if now - self._last_recovery >= self.settings.lease_timeout / 2:
            self._last_recovery = now
            await self.recover()

    def _check(self, run: Attempt, task: Task | None, now: float, wall: float) -> None:
        """Stop an attempt that lost its task, was cancelled elsewhere, or ran out of time."""
        check = check_attempt(
            run.ctx.task, task, worker_id=self.worker_id, now=wall,
            running_for=now - run.started_at, started=run.ctx.is_started,
            start_timeout=self.settings.start_timeout,
        )  # fmt: skip
        match check:
            case None:
                return
            case ("superseded", detail):
                _log.warning(
                    "task %s: attempt %d was superseded (%s); stopping it",
                    run.ctx.task.id, run.ctx.task.attempt, detail,
                )  # fmt: skip
                run.stop("lost", "superseded")
            case ("lost", detail):
                run.stop("lost", detail)
            case ("cancel", _):
                if not run.ctx.cancel_requested:
                    self.request_stop(run, force=False)
            case (reason, detail) if run.stop_reason is None:
                run.stop(reason, detail)

    def request_stop(self, run: Attempt, force: bool) -> None:
        """Tell the runner (``ctx.cancel_requested``) and cancel its asyncio task."""
        run.ctx.request_cancel(force=force)
        run.stop("cancel", "cancelled by request")

    async def recover(self) -> list[Task]:
        """Record a decision for every live task whose owner is dead; return those tasks."""
        async with self._claim_lock:  # a claim in flight is not yet "running here"
            decided = await recover_orphans(
                self.store, worker_id=self.worker_id, leases=self._leases,
                now=self.clock.monotonic(), lease_timeout=self.settings.lease_timeout,
                running_here=self.running.keys(), here=self.here,
            )  # fmt: skip
        for task in decided:
            self._on_written(task)
        if decided:
            self.wake()
        return decided

    # -- control from this process -------------------------------------------------------------

    async def cancelled(self, task: Task, force: bool) -> Task:
        """A cancel of ``task`` was recorded here: stop its attempt if it runs here, and
        (unless forced) wait until it ended: at most ``cancel_grace`` and its last write."""
        run = self.running.get(task.id)
        if run is None:
            return task
        if task.is_terminal:
            run.ctx.request_cancel(force=force)
            run.stop("lost", "cancelled")
            return task
        self.request_stop(run, force)
        await run.done.wait()  # bounded: the runner is abandoned after cancel_grace
        return await self.store.get_task(task.id) or task

    def finished_outside(self, task: Task) -> None:
        """``task`` was finished from outside: its attempt here, if any, stops."""
        run = self.running.get(task.id)
        if run is not None:
            run.stop("lost", "finished from outside")
