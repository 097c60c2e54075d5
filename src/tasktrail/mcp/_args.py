"""The arguments of each tool, as pydantic models: their JSON schema is what ``tools/list``
shows, and validating against them is the first thing ``tools/call`` does.

Bounds are part of the contract: a prompt over :data:`MAX_PROMPT_CHARS`, a negative
timeout or an unknown field is refused before anything is written.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasktrail.ids import MAX_TASK_ID_LENGTH

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_WAIT_SECONDS",
    "CancelArgs",
    "HistoryArgs",
    "LaunchArgs",
    "ListArgs",
    "OutputArgs",
    "RunArgs",
    "TaskIdArgs",
    "WaitArgs",
    "describe_error",
]

MAX_PROMPT_CHARS: Final = 100_000
"""The longest prompt a tool call may pass (the log takes events up to 1 MiB)."""
MAX_WAIT_SECONDS: Final = 600.0
"""The longest one call may wait; keep waits below the client's tool-call timeout."""
MAX_RUN_TIMEOUT: Final = 7 * 24 * 3600.0

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TASK_ID_LENGTH,
        description="The task's id, as launch_task, run_task or list_tasks returned it.",
    ),
]


class _Args(BaseModel):
    """Unknown fields are refused: a misspelt argument is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskIdArgs(_Args):
    task_id: TaskId


class LaunchArgs(_Args):
    agent: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            description="The agent that runs the task: one of the agents this server allows.",
        ),
    ]
    prompt: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            description="What the agent is asked to do (for the `shell` agent: the command).",
        ),
    ]
    description: Annotated[
        str,
        Field(max_length=200, description="A short label, shown in listings."),
    ] = ""
    parent_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_TASK_ID_LENGTH,
            description="The task this one is part of; cancelling the parent cancels it too.",
        ),
    ] = None
    priority: Annotated[
        int,
        Field(ge=-1000, le=1000, description="Higher starts first when workers are busy."),
    ] = 0
    timeout: Annotated[
        float | None,
        Field(
            gt=0,
            le=MAX_RUN_TIMEOUT,
            description="Seconds the task may run once started; then it is stopped and fails. "
            "Omit for the server's default.",
        ),
    ] = None


class RunArgs(LaunchArgs):
    wait: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds this call waits for the task to finish before it returns "
            "the task's id to follow up on.",
        ),
    ] = 60.0


class OutputArgs(_Args):
    task_id: TaskId
    since: Annotated[
        int,
        Field(ge=0, description="Character offset to read from: the `next` of your last call."),
    ] = 0
    max_chars: Annotated[
        int,
        Field(ge=1, le=100_000, description="The most characters to return in this call."),
    ] = 20_000
    wait: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for output past `since` (or for the end) when "
            "there is none yet; 0 returns at once.",
        ),
    ] = 0.0


class WaitArgs(_Args):
    task_id: TaskId
    timeout: Annotated[
        float,
        Field(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait at most."),
    ] = 30.0


class CancelArgs(_Args):
    task_id: TaskId
    force: Annotated[
        bool,
        Field(description="Cancel at once and kill the process, without a grace period."),
    ] = False
    reason: Annotated[
        str,
        Field(max_length=500, description="Why; kept in the task's audit trail."),
    ] = ""


class ListArgs(_Args):
    state: Annotated[
        Literal[
            "pending", "starting", "running", "completed", "failed", "cancelled",
            "unfinished", "finished",
        ] | None,
        Field(description="Only tasks in this state (`unfinished`: pending, starting or "
              "running; `finished`: completed, failed or cancelled)."),
    ] = None  # fmt: skip
    agent: Annotated[
        str | None, Field(min_length=1, max_length=100, description="Only this agent's tasks.")
    ] = None
    parent_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_TASK_ID_LENGTH,
            description="Only the children of this task.",
        ),
    ] = None
    limit: Annotated[int, Field(ge=1, le=200, description="The most tasks to return.")] = 20


class HistoryArgs(_Args):
    task_id: TaskId
    include_output: Annotated[
        bool,
        Field(description="Also list each output event (by default they are only counted)."),
    ] = False


def describe_error(error: ValidationError) -> str:
    """A validation error as one line a model can act on: ``field: problem; ...``."""
    parts = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown argument"
        elif item["type"] == "missing":
            message = "missing (it is required)"
        parts.append(f"{where}: {message}")
    return "invalid arguments: " + "; ".join(parts)
