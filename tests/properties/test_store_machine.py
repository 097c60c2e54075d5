"""A hypothesis state machine over the real store of each backend (a SQLite file, a schema on
the PostgreSQL server), checked against a small model.

The model knows each task's state, version and cancel flag; the lifecycle's own
``next_state`` says only whether an append should succeed. After every step the whole log
is re-read and checked: legal paths only, absorbing terminal states, gap-free versions and
sequence numbers, an intact hash chain, and a projection equal to a rebuild.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pgserver import Databases
from tasktrail import (
    AppendResult,
    CancelRequested,
    ChildFinished,
    Event,
    EventStore,
    IllegalTransitionError,
    NewEvent,
    OutputAppended,
    ProgressReported,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskCreated,
    TaskExistsError,
    TaskFailed,
    TaskNotFoundError,
    TaskRequeued,
    TaskStarted,
    TaskState,
    TasktrailError,
    Trigger,
    VersionConflictError,
    open_store,
)
from tasktrail.events import EVENT_TYPES
from tasktrail.lifecycle import TERMINAL_STATES, next_state

T = TypeVar("T")

# No NUL: every backend refuses it in an event's reason, correlation or event id and in
# agent, parent_id and concurrency_key (InvalidInputError before any other check; see
# tests/store/test_contract.py::test_nul_in_stored_text_is_refused_alike_everywhere), so
# the machine's model of versions and states would only learn that refusal.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
TASK_IDS = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), max_size=12)

# The triggers a caller may try on an existing task, legal or not, with a payload for each.
PAYLOADS: dict[Trigger, Callable[[int], st.SearchStrategy[Event]]] = {
    Trigger.CLAIM: lambda attempt: st.builds(TaskClaimed, worker_id=TEXT, attempt=st.just(attempt)),
    Trigger.START: lambda _: st.builds(TaskStarted, session_id=st.none() | TEXT),
    Trigger.COMPLETE: lambda _: st.builds(TaskCompleted, result=st.none() | TEXT | st.integers()),
    Trigger.FAIL: lambda _: st.builds(TaskFailed, error=TEXT),
    Trigger.CANCEL: lambda _: st.builds(TaskCancelled, forced=st.booleans()),
    Trigger.REQUEUE: lambda _: st.builds(TaskRequeued, not_before=st.none() | st.floats(0, 1e10)),
    Trigger.REQUEST_CANCEL: lambda _: st.builds(CancelRequested, force=st.booleans()),
    Trigger.ANNOTATE: lambda _: st.one_of(
        st.builds(OutputAppended, text=TEXT),
        st.builds(ProgressReported, current=st.floats(0, 100), total=st.none() | st.just(100.0)),
        st.builds(ChildFinished, child_id=TEXT, state=st.sampled_from(sorted(TERMINAL_STATES))),
    ),
}
TRIGGERS = st.sampled_from(sorted(PAYLOADS))
LIVE = frozenset(TaskState) - TERMINAL_STATES
# Legal triggers that end a task early or send it back; advance() picks them less often.
DETOURS = frozenset({Trigger.CANCEL, Trigger.FAIL, Trigger.REQUEST_CANCEL, Trigger.REQUEUE})


@dataclass
class Model:
    """What the machine expects one task to be."""

    state: TaskState
    version: int
    cancel_requested: bool = False
    attempt: int = 0


def _simulate(model: Model | None, triggers: list[Trigger]) -> Model | None:
    """The model after ``triggers`` in one append, or ``None`` if the lifecycle refuses one."""
    state = model.state if model else None
    flag = model.cancel_requested if model else False
    version = model.version if model else 0
    attempt = model.attempt if model else 0
    for trigger in triggers:
        after = next_state(state, flag, trigger)
        if after is None:
            return None
        state, version = after, version + 1
        flag = flag or trigger is Trigger.REQUEST_CANCEL
        attempt += trigger is Trigger.CLAIM
    assert state is not None
    return Model(state, version, flag, attempt)


def _paths() -> dict[tuple[TaskState, bool], list[Trigger]]:
    """A shortest legal path to every reachable (state, cancel requested), found by BFS."""
    paths: dict[tuple[TaskState, bool], list[Trigger]] = {}
    frontier = [[Trigger.CREATE]]
    while frontier:
        path = frontier.pop(0)
        model = _simulate(None, path)
        assert model is not None
        key = (model.state, model.cancel_requested)
        if key in paths:
            continue
        paths[key] = path
        frontier.extend([*path, t] for t in sorted(PAYLOADS) if _simulate(model, [t]))
    return paths


PATHS = _paths()


class StoreMachine(RuleBasedStateMachine):
    """Random appends, legal and illegal, concurrent and repeated, across reopens."""

    tasks = Bundle("tasks")

    def __init__(self, database: str) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.database = database
        self.store: EventStore | None = None
        self.store = self.run(open_store(database).open())
        self.model: dict[str, Model] = {}
        # The last accepted append of each task: its events, expected version and result.
        self.accepted: dict[str, tuple[list[NewEvent], int, AppendResult]] = {}
        self.head = 0
        self.names = 0

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await awaitable

        return self.runner.run(wrapper())

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.run(self.store.close())
        finally:
            self.runner.close()

    # -- helpers -------------------------------------------------------------------------

    @property
    def db(self) -> EventStore:
        assert self.store is not None
        return self.store

    def live(self) -> list[str]:
        """The tasks not yet in a terminal state."""
        return sorted(i for i, m in self.model.items() if m.state in LIVE)

    def fresh_id(self, data: st.DataObject) -> str:
        self.names += 1
        return f"task-{self.names}-{data.draw(TASK_IDS, label='name')}"

    def accept(
        self, task_id: str, events: list[NewEvent], expected: int, result: AppendResult
    ) -> None:
        """Check an accepted append against the model, then advance the model."""
        after = _simulate(self.model.get(task_id), [e.payload.trigger for e in events])
        assert after is not None
        assert not result.duplicate
        assert result.version == after.version
        assert result.sequence == self.head + len(events)
        assert result.task.state is after.state
        assert result.task.cancel_requested is after.cancel_requested
        self.model[task_id] = after
        self.accepted[task_id] = (events, expected, result)
        self.head = result.sequence

    def try_append(
        self, task_id: str, events: list[NewEvent], expected: int | None
    ) -> AppendResult | TasktrailError:
        """The append's result, or the tasktrail error it raised."""
        try:
            return self.run(self.db.append(task_id, events, expected_version=expected))
        except TasktrailError as err:
            return err

    def assert_unchanged(self, task_id: str) -> None:
        """Nothing was written: the head and the task are where the model says."""
        assert self.run(self.db.head()) == self.head
        task = self.run(self.db.get_task(task_id))
        model = self.model.get(task_id)
        assert (task.version if task else 0) == (model.version if model else 0)

    def pick_triggers(self, data: st.DataObject, task_id: str, size: int) -> list[Trigger]:
        """Mostly legal triggers that move the task forward; sometimes any at all."""
        triggers: list[Trigger] = []
        for _ in range(size):
            after = _simulate(self.model[task_id], triggers)
            legal = [t for t in sorted(PAYLOADS) if after and _simulate(after, [t])]
            forward = [t for t in legal if t not in DETOURS]
            choice = data.draw(st.integers(0, 7), label="choice")
            pool = forward if forward and choice > 2 else legal if legal and choice else []
            triggers.append(data.draw(st.sampled_from(pool) if pool else TRIGGERS, label="t"))
        return triggers

    def draw_events(
        self, data: st.DataObject, task_id: str, triggers: list[Trigger]
    ) -> list[NewEvent]:
        attempt = self.model[task_id].attempt if task_id in self.model else 0
        events = []
        for trigger in triggers:
            attempt += trigger is Trigger.CLAIM
            payload = data.draw(PAYLOADS[trigger](attempt), label=trigger.value)
            reason = data.draw(st.none() | TEXT, label="reason")
            events.append(NewEvent(payload, actor="machine", reason=reason))
        return events

    # -- rules -----------------------------------------------------------------------------

    @initialize(target=tasks, data=st.data())
    def first_task(self, data: st.DataObject) -> str:
        """Every run starts with one task."""
        return self.create(data)

    @rule(target=tasks, data=st.data())
    def create(self, data: st.DataObject) -> str:
        """A new task is created at version 1, pending."""
        task_id = self.fresh_id(data)
        events = [NewEvent(data.draw(st.builds(TaskCreated, agent=TEXT, prompt=TEXT)))]
        result = self.run(self.db.append(task_id, events, expected_version=0))
        self.accept(task_id, events, 0, result)
        return task_id

    @rule(target=tasks, situation=st.sampled_from(sorted(PATHS)), data=st.data())
    def jump(self, situation: tuple[TaskState, bool], data: st.DataObject) -> str:
        """Create a task and bring it to a chosen situation in one append, then prod it."""
        task_id = self.fresh_id(data)
        created = [NewEvent(data.draw(st.builds(TaskCreated, agent=TEXT)))]
        events = created + self.draw_events(data, task_id, PATHS[situation][1:])
        result = self.run(self.db.append(task_id, events, expected_version=0))
        self.accept(task_id, events, 0, result)
        assert (result.task.state, result.task.cancel_requested) == situation
        self.append_checked(task_id, [data.draw(TRIGGERS, label="trigger")], data)
        return task_id

    @rule(task_id=tasks, data=st.data())
    def create_duplicate(self, task_id: str, data: st.DataObject) -> None:
        """Creating a task that exists is refused, whatever the version given."""
        version = self.model[task_id].version
        expected = data.draw(st.sampled_from([None, version]), label="expected")
        events = [NewEvent(TaskCreated(agent="again"))]
        outcome = self.try_append(task_id, events, expected)
        assert isinstance(outcome, TaskExistsError), outcome
        assert outcome.task_id == task_id
        self.assert_unchanged(task_id)

    @rule(data=st.data(), trigger=TRIGGERS)
    def trigger_unknown_task(self, data: st.DataObject, trigger: Trigger) -> None:
        """Any trigger but create on a task that does not exist is TaskNotFoundError."""
        task_id = self.fresh_id(data) + "-missing"
        events = self.draw_events(data, task_id, [trigger])
        outcome = self.try_append(task_id, events, 0)
        assert isinstance(outcome, TaskNotFoundError), outcome
        assert outcome.task_id == task_id
        self.assert_unchanged(task_id)

    @rule(task_id=tasks, triggers=st.lists(TRIGGERS, min_size=1, max_size=3), data=st.data())
    def apply(self, task_id: str, triggers: list[Trigger], data: st.DataObject) -> None:
        """One append of one to three random events: all are written, or none if one is illegal."""
        self.append_checked(task_id, triggers, data)

    @precondition(lambda self: self.live())
    @rule(size=st.integers(1, 3), data=st.data())
    def advance(self, size: int, data: st.DataObject) -> None:
        """Like apply, on a live task, mostly with legal events that move it forward."""
        task_id = data.draw(st.sampled_from(self.live()), label="task_id")
        self.append_checked(task_id, self.pick_triggers(data, task_id, size), data)

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def batch_across_tasks(self, data: st.DataObject) -> None:
        """Appends to different tasks at once are each decided as if alone."""
        ids = st.lists(st.sampled_from(sorted(self.model)), min_size=2, max_size=5, unique=True)
        appends = []
        for task_id in data.draw(ids, label="task_ids"):
            triggers = self.pick_triggers(data, task_id, data.draw(st.integers(1, 2)))
            appends.append((task_id, triggers, self.draw_events(data, task_id, triggers)))

        async def together() -> list[AppendResult | BaseException]:
            return await asyncio.gather(
                *(
                    self.db.append(i, e, expected_version=self.model[i].version)
                    for i, _, e in appends
                ),
                return_exceptions=True,
            )

        accepted = []
        for (task_id, triggers, events), outcome in zip(appends, self.run(together()), strict=True):
            if _simulate(self.model[task_id], triggers) is None:
                assert isinstance(outcome, IllegalTransitionError), f"{triggers}: {outcome}"
            else:
                assert isinstance(outcome, AppendResult), f"{triggers}: {outcome!r}"
                accepted.append((outcome.sequence, task_id, events, outcome))
        for _, task_id, events, result in sorted(accepted, key=lambda a: a[0]):
            self.accept(task_id, events, self.model[task_id].version, result)

    def append_checked(self, task_id: str, triggers: list[Trigger], data: st.DataObject) -> None:
        model = self.model[task_id]
        events = self.draw_events(data, task_id, triggers)
        outcome = self.try_append(task_id, events, model.version)
        if _simulate(model, triggers) is None:
            assert isinstance(outcome, IllegalTransitionError), f"illegal {triggers}: {outcome}"
            assert outcome.task_id == task_id
            self.assert_unchanged(task_id)
        else:
            assert isinstance(outcome, AppendResult), f"legal {triggers}: {outcome!r}"
            self.accept(task_id, events, model.version, outcome)

    @rule(task_id=tasks, offset=st.integers(-3, 3).filter(bool), trigger=TRIGGERS, data=st.data())
    def stale_append(
        self, task_id: str, offset: int, trigger: Trigger, data: st.DataObject
    ) -> None:
        """An append based on another version is refused and writes nothing."""
        actual = self.model[task_id].version
        expected = actual + offset if actual + offset >= 0 else actual - offset
        events = self.draw_events(data, task_id, [trigger])
        outcome = self.try_append(task_id, events, expected)
        assert isinstance(outcome, VersionConflictError), outcome
        assert (outcome.task_id, outcome.expected, outcome.actual) == (task_id, expected, actual)
        self.assert_unchanged(task_id)

    @precondition(lambda self: self.live())
    @rule(count=st.integers(2, 5), data=st.data())
    def concurrent_appends(self, count: int, data: st.DataObject) -> None:
        """Several legal appends on the same version at once: exactly one wins."""
        task_id = data.draw(st.sampled_from(self.live()), label="task_id")
        model = self.model[task_id]
        legal = [t for t in sorted(PAYLOADS) if _simulate(model, [t]) is not None]
        attempts = [
            self.draw_events(data, task_id, [data.draw(st.sampled_from(legal), label="trigger")])
            for _ in range(count)
        ]

        async def race() -> list[AppendResult | BaseException]:
            return await asyncio.gather(
                *(self.db.append(task_id, e, expected_version=model.version) for e in attempts),
                return_exceptions=True,
            )

        outcomes = self.run(race())
        winners = [i for i, o in enumerate(outcomes) if isinstance(o, AppendResult)]
        assert len(winners) == 1, outcomes
        for outcome in outcomes:
            if not isinstance(outcome, AppendResult):
                assert isinstance(outcome, VersionConflictError), outcome
                assert (outcome.expected, outcome.actual) == (model.version, model.version + 1)
        result = outcomes[winners[0]]
        assert isinstance(result, AppendResult)
        self.accept(task_id, attempts[winners[0]], model.version, result)

    @precondition(lambda self: self.accepted)
    @rule(data=st.data(), at_once=st.booleans())
    def retry_append(self, data: st.DataObject, at_once: bool) -> None:
        """Sending an accepted append again is a duplicate and writes nothing twice."""
        task_id = data.draw(st.sampled_from(sorted(self.accepted)), label="task_id")
        events, expected, first = self.accepted[task_id]
        tries = 2 if at_once else 1

        async def again() -> list[AppendResult]:
            return await asyncio.gather(
                *(self.db.append(task_id, events, expected_version=expected) for _ in range(tries))
            )

        for result in self.run(again()):
            assert result.duplicate
            assert (result.version, result.sequence) == (first.version, first.sequence)
            assert result.task.version == self.model[task_id].version
        self.assert_unchanged(task_id)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), trigger=TRIGGERS)
    def retry_in_flight(self, data: st.DataObject, trigger: Trigger) -> None:
        """The same new events sent twice at once are written once; both calls succeed."""
        task_id = data.draw(st.sampled_from(sorted(self.model)), label="task_id")
        model = self.model[task_id]
        events = self.draw_events(data, task_id, [trigger])

        async def twice() -> list[AppendResult | BaseException]:
            return await asyncio.gather(
                *(self.db.append(task_id, events, expected_version=model.version) for _ in "ab"),
                return_exceptions=True,
            )

        outcomes = self.run(twice())
        if _simulate(model, [trigger]) is None:
            assert all(isinstance(o, IllegalTransitionError) for o in outcomes), outcomes
            self.assert_unchanged(task_id)
            return
        assert all(isinstance(o, AppendResult) for o in outcomes), outcomes
        results = [o for o in outcomes if isinstance(o, AppendResult)]
        assert sorted(r.duplicate for r in results) == [False, True]
        assert results[0].sequence == results[1].sequence == self.head + 1
        first = next(r for r in results if not r.duplicate)
        self.accept(task_id, events, model.version, first)

    @rule()
    def reopen(self) -> None:
        """Close the store and open the database again."""
        self.run(self.db.close())
        self.store = None
        self.store = self.run(open_store(self.database).open())

    @rule()
    def rebuild(self) -> None:
        """Rebuilding the projection from the log changes no task."""
        before = {i: self.run(self.db.get_task(i)) for i in self.model}
        assert self.run(self.db.rebuild()) == len(self.model)
        after = {i: self.run(self.db.get_task(i)) for i in self.model}
        assert after == before

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def log_is_consistent(self) -> None:
        """The whole log, the projection and the model agree."""
        self.run(self.check_log())

    async def check_log(self) -> None:
        store = self.db
        events: list[RecordedEvent] = []
        while batch := await store.read_all(after=len(events), limit=100):
            events.extend(batch)
        # The global sequence is 1..n; versions are 1..k per task; paths are legal.
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert await store.head() == len(events) == self.head
        streams: dict[str, list[RecordedEvent]] = {}
        for event in events:
            streams.setdefault(event.stream_id, []).append(event)
        assert streams.keys() == self.model.keys()
        for task_id, stream in streams.items():
            assert [e.version for e in stream] == list(range(1, len(stream) + 1))
            state: TaskState | None = None
            flag = False
            for event in stream:
                assert state not in TERMINAL_STATES, f"{task_id}: {event.type} after {state}"
                after = next_state(state, flag, event.payload.trigger)
                assert after is not None, f"{task_id}: illegal {event.type} in {state}"
                state, flag = after, flag or isinstance(event.payload, CancelRequested)
            model = self.model[task_id]
            assert (state, flag, len(stream)) == (
                model.state,
                model.cancel_requested,
                model.version,
            )
            task = await store.get_task(task_id)
            assert task is not None
            assert (task.state, task.cancel_requested, task.version) == (state, flag, len(stream))
        assert {t.id for t in await store.list_tasks()} == self.model.keys()
        assert await store.check_projection() == []
        report = await store.verify()
        assert (report.events, report.head_sequence) == (len(events), len(events))


def test_store_machine(databases: Databases, machine_settings: settings) -> None:
    """The store machine holds on each backend, every run on a new, empty database."""
    run_state_machine_as_test(lambda: StoreMachine(databases.new()), settings=machine_settings)


def test_machine_tries_every_trigger() -> None:
    """The machine has a payload for every trigger an event type carries, creation aside."""
    assert {cls.trigger for cls in EVENT_TYPES.values()} == {Trigger.CREATE, *PAYLOADS}


def test_machine_model_simulates_the_lifecycle() -> None:
    """The model's simulation follows next_state, cancel flag and attempts included."""
    created = _simulate(None, [Trigger.CREATE])
    assert created == Model(TaskState.PENDING, 1)
    assert _simulate(created, [Trigger.CLAIM, Trigger.START]) == Model(
        TaskState.RUNNING, 3, attempt=1
    )
    requested = _simulate(created, [Trigger.REQUEST_CANCEL])
    assert requested == Model(TaskState.PENDING, 2, cancel_requested=True)
    assert _simulate(requested, [Trigger.CLAIM]) is None
    assert _simulate(created, [Trigger.CANCEL, Trigger.ANNOTATE]) is None
