"""Progress bars for long work (verify, rebuild, export, a bulk cancel): counts, rate and
time on stderr, only when stderr is a terminal (never in a pipe, a file or CI's log)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from tasktrail.cli._app import console
from tasktrail.store._progress import reporting

__all__ = ["progress"]


class _Rate(ProgressColumn):
    """``12,345 events/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed:
            speed = task.completed / task.elapsed  # one step so far: the mean
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="dim")


@contextlib.contextmanager
def progress(
    what: str, *, total: int | None, unit: str = "events"
) -> Iterator[Callable[[int], None]]:
    """A bar for ``what`` on stderr when it is a terminal; yields ``advance(n)``.

    The store's whole-log passes run inside it report to it as well (``tasktrail.store.
    _progress``). Off a terminal, nothing is drawn and ``advance`` does nothing.
    """
    err = console(stderr=True)
    if not err.is_terminal:
        with reporting(lambda _: None):
            yield lambda _: None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        _Rate(unit),
        TimeElapsedColumn(),
        console=err,
    )
    with bar:
        task = bar.add_task(what, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        with reporting(advance):
            yield advance
        if total is not None:
            bar.update(task, completed=max(total, bar.tasks[0].completed))
