"""Runners defined at import time: a :class:`Registry`, and the check every runner passes.

A module declares its agents where it defines them, with no event loop and no database::

    tasks = tasktrail.Registry()

    @tasks.agent("resize")
    async def resize(ctx):
        ...

``tasktrail worker --app myapp.jobs:tasks`` serves them; in Python, ``tm.include(tasks)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar, cast

from tasktrail.errors import InvalidInputError
from tasktrail.runtime.context import RunContext, Runner

__all__ = ["Registry", "as_runner"]

F = TypeVar("F", bound=Callable[..., Any])


class _Blocking:
    """A plain ``def`` runner: called in a worker thread."""

    is_blocking: Final = True

    def __init__(self, fn: Callable[[RunContext], Any]) -> None:
        self.fn = fn

    def __call__(self, ctx: RunContext) -> Any:
        return self.fn(ctx)

    def __repr__(self) -> str:
        return f"blocking({self.fn!r})"


def _is_async(runner: object) -> bool:
    return (
        inspect.iscoroutinefunction(runner)
        or inspect.iscoroutinefunction(getattr(runner, "__call__", None))  # noqa: B004
        or bool(getattr(runner, "manages_start", False))
    )


def as_runner(agent: object, runner: object) -> Runner:
    """``runner`` as the runtime calls it, or InvalidInputError saying why it cannot be one.

    Accepted: ``async def fn(ctx)``, a plain ``def fn(ctx)`` (run in a worker thread), and
    runner objects (``SubprocessRunner``, ``AgentSessionRunner``, any callable instance).
    """
    if not agent or not isinstance(agent, str):
        raise InvalidInputError(f"agent must be a non-empty str, not {agent!r}")
    if inspect.isclass(runner):
        raise InvalidInputError(
            f"the runner for {agent!r} is a class ({runner.__name__}); register an "
            "instance, or a function taking the run context"
        )
    if (
        not callable(runner)
        or inspect.isgeneratorfunction(runner)
        or inspect.isasyncgenfunction(runner)
    ):
        raise InvalidInputError(
            f"the runner for {agent!r} must be an async or plain function taking the "
            f"run context (or a runner object), not {runner!r}"
        )
    if isinstance(runner, _Blocking) or _is_async(runner):
        return cast(Runner, runner)
    return _Blocking(runner)


class Registry:
    """Agents and their runners, declared at import time (see the module doc)."""

    def __init__(self) -> None:
        self._runners: dict[str, Runner] = {}

    def agent(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator: run tasks of agent ``name`` (default: the function's name) with it."""

        def register(fn: F) -> F:
            self.register(name or str(getattr(fn, "__name__", "")), fn)
            return fn

        return register

    def register(self, agent: str, runner: Runner | Callable[[RunContext], Any]) -> None:
        """Run tasks of ``agent`` with ``runner`` (checked now, not when a task runs)."""
        if agent in self._runners:
            raise InvalidInputError(f"agent {agent!r} is registered twice")
        self._runners[agent] = as_runner(agent, runner)

    @property
    def runners(self) -> Mapping[str, Runner]:
        """Every agent and its runner."""
        return dict(self._runners)

    def __iter__(self) -> Iterator[str]:
        return iter(self._runners)

    def __len__(self) -> int:
        return len(self._runners)

    def __contains__(self, agent: object) -> bool:
        return agent in self._runners

    def __repr__(self) -> str:
        return f"Registry({', '.join(sorted(self._runners))})"
