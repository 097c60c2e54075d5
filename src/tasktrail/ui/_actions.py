"""The dashboard's actions (cancel, cancel by force, rerun) and who may take them.

Off unless the dashboard was started with ``--allow-actions``. Then every action

* is a POST whose ``Origin`` (else ``Referer``) is the dashboard itself, and which no
  browser marked as cross-site (``Sec-Fetch-Site``): another site cannot make a visitor's
  browser take one;
* carries the token the dashboard printed when it started, as Jupyter does: the printed
  URL holds it once (``?token=...``), the dashboard then keeps it in a same-site,
  HTTP-only cookie; a form may also carry it in its ``token`` field;
* is recorded in the log by actor ``ui``, with the reason typed in the page.

Anything else is refused with 403 before anything is written.

The writes themselves go through an :class:`~tasktrail.AsyncClient` (it launches and
cancels, never runs a task), in :meth:`Actions.perform` only.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Mapping
from typing import Final

from tasktrail.errors import InvalidInputError
from tasktrail.projection import Task
from tasktrail.runtime.client import AsyncClient

__all__ = ["ACTIONS", "ACTOR", "Actions", "Forbidden", "new_token", "same_origin"]

ACTOR: Final = "ui"
"""The actor of every event an action records."""
ACTIONS: Final = ("cancel", "force-cancel", "rerun")
MAX_REASON: Final = 500


class Forbidden(Exception):
    """An action was refused: actions are off, the token is missing or wrong, or the
    request did not come from the dashboard's own pages. Nothing was written. (The
    dashboard answers 403; it never leaves the web app.)"""


def new_token() -> str:
    """A fresh random token for a dashboard's actions."""
    return secrets.token_urlsafe(24)


def same_origin(headers: Mapping[str, str], *, scheme: str, host: str) -> bool:
    """Whether a request came from a page of this dashboard (``scheme://host``).

    The browser's ``Origin`` header decides; without one, the ``Referer``'s origin; without
    either the request is refused (every browser sends ``Origin`` with a POST).
    """
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    expected = f"{scheme}://{host}".lower()
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == expected
    referer = headers.get("referer")
    if referer is None:
        return False
    parts = urllib.parse.urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}".lower() == expected


class Actions:
    """Cancel and rerun, for a dashboard started with actions on."""

    def __init__(self, client: AsyncClient | None, token: str | None) -> None:
        if (client is None) != (token is None):
            raise ValueError("actions need both a client and a token, or neither")
        self.client = client
        self.token = token

    @property
    def enabled(self) -> bool:
        """Whether the dashboard was started with actions on."""
        return self.client is not None

    def token_matches(self, given: str | None) -> bool:
        """Whether ``given`` is this dashboard's token (in constant time)."""
        return (
            self.token is not None
            and given is not None
            and secrets.compare_digest(given.encode(), self.token.encode())
        )

    def authorize(self, *, origin_ok: bool, tokens: list[str | None]) -> AsyncClient:
        """The client to act with; Forbidden unless actions are on, the request came
        from the dashboard and one of ``tokens`` (form field, header, cookie) matches."""
        if self.client is None:
            raise Forbidden("actions are off: start the dashboard with --allow-actions")
        if not origin_ok:
            raise Forbidden("refused: the request did not come from this dashboard's pages")
        if not any(self.token_matches(token) for token in tokens):
            raise Forbidden(
                "refused: this action needs the token that `tasktrail ui` printed when it "
                "started (open the URL it printed, or paste the token in the page)"
            )
        return self.client

    async def perform(self, client: AsyncClient, action: str, task_id: str, reason: str) -> Task:
        """Take ``action`` on ``task_id``, recorded with actor ``ui`` and ``reason``."""
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInputError("give a reason: it is recorded in the log with the action")
        if len(reason) > MAX_REASON:
            raise InvalidInputError(f"the reason is longer than {MAX_REASON} characters")
        if action == "cancel":
            return await client.cancel(task_id, force=False, actor=ACTOR, reason=reason)
        if action == "force-cancel":
            return await client.cancel(task_id, force=True, actor=ACTOR, reason=reason)
        if action == "rerun":
            return await client.rerun(task_id, actor=ACTOR, reason=reason)
        raise InvalidInputError(f"unknown action {action[:40]!r}: one of {', '.join(ACTIONS)}")
