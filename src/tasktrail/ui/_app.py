"""The dashboard's web app (Starlette): pages, live streams, actions.

Pages are rendered on the server (Jinja2, autoescaping on: every text from the log is
escaped); a small script (``static/ui.js``) keeps them live over server-sent events and
builds what it adds with ``textContent`` only. Every asset ships in the package: no CDN,
no build step. A Content-Security-Policy allows scripts and styles from the dashboard
itself only, so even a text that escaped escaping could not run.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tasktrail
from tasktrail.errors import (
    InvalidInputError,
    StorageBusyError,
    TaskNotFoundError,
    TasktrailError,
)
from tasktrail.lifecycle import TaskState
from tasktrail.ui._actions import ACTIONS, Forbidden, same_origin
from tasktrail.ui._dashboard import Dashboard
from tasktrail.ui._queries import Cursor, TaskFilter
from tasktrail.ui._stream import ListView, TaskView, View, sse

__all__ = ["create_app"]

HERE: Final = Path(__file__).resolve().parent
MAX_FORM: Final = 64 * 1024
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_encode = msgspec.json.Encoder().encode

Endpoint = Callable[[Request], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["idpath"] = lambda task_id: urllib.parse.quote(str(task_id), safe="")
    env.filters["num"] = lambda n: f"{n:,}"
    return env


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in (HERE / "static").iterdir()):
        digest.update((HERE / "static" / name).read_bytes())
    return digest.hexdigest()[:10]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Security headers on every response, and a ``Server-Timing`` header: the time from
    the request to the response's first byte (a page is rendered whole before it). On a
    dashboard bound to a loopback address, requests naming another host are refused (a
    DNS-rebinding page cannot read it)."""

    def __init__(self, app: ASGIApp, *, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = urllib.parse.urlsplit(f"//{host}").hostname or ""
            if not is_loopback(name):
                response = PlainTextResponse(
                    f"this dashboard answers only to a loopback host, not {host[:60]!r}", 400
                )
                await response(scope, receive, send)
                return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                spent = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={spent:.1f}".encode()))
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Pages:
    """The endpoints of one dashboard."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash
        self.env = _environment()
        self.assets = _asset_version()

    # -- helpers -------------------------------------------------------------------------------

    def cookie_name(self, request: Request) -> str:
        return f"tasktrail_ui_token_{request.url.port or 80}"

    def token_ok(self, request: Request) -> bool:
        return self.dash.actions.token_matches(request.cookies.get(self.cookie_name(request)))

    def render(
        self, request: Request, template: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("head", None)
        context.setdefault("nav", "")
        page = self.env.get_template(template).render(
            request=request,
            database=self.dash.label,
            assets=self.assets,
            version=tasktrail.__version__,
            actions_on=self.dash.actions.enabled,
            token_ok=self.token_ok(request),
            states=[state.value for state in TaskState],
            **context,
        )
        return HTMLResponse(page, code)

    def wants_json(self, request: Request) -> bool:
        path = request.url.path
        return path.startswith(("/api/", "/stream"))

    async def error(self, request: Request, status: int, message: str) -> Response:
        if self.wants_json(request):
            return Response(_encode({"error": message}), status, media_type="application/json")
        return self.render(request, "error.html", status, status=status, message=message)

    async def handle_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, TaskNotFoundError):
            return await self.error(request, 404, str(exc))
        if isinstance(exc, Forbidden):
            return await self.error(request, 403, str(exc))
        if isinstance(exc, InvalidInputError):
            return await self.error(request, 400, str(exc))
        if isinstance(exc, StorageBusyError):
            return await self.error(request, 503, str(exc))
        if isinstance(exc, HTTPException):
            return await self.error(request, exc.status_code, str(exc.detail))
        return await self.error(request, 500, str(exc))

    def with_token(self, endpoint: Endpoint) -> Endpoint:
        """Let a page's URL carry the token once (``?token=``): keep it in a cookie and
        send the browser to the same URL without it."""

        async def wrapped(request: Request) -> Response:
            given = request.query_params.get("token")
            if given is None or not self.dash.actions.enabled:
                return await endpoint(request)
            if not self.dash.actions.token_matches(given):
                raise Forbidden("that is not this dashboard's token")
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urllib.parse.urlencode(query)}" if query else "")
            response = RedirectResponse(target, 303)
            response.set_cookie(
                self.cookie_name(request), given, httponly=True, samesite="strict", path="/"
            )
            return response

        return wrapped

    @staticmethod
    def _filter(params: Mapping[str, str]) -> TaskFilter:
        return TaskFilter.parse(
            state=params.get("state"), agent=params.get("agent"),
            parent_id=params.get("parent"), text=params.get("q"),
        )  # fmt: skip

    # -- pages -----------------------------------------------------------------------------------

    async def tasks(self, request: Request) -> Response:
        params = request.query_params
        where = self._filter(params)
        before = Cursor.decode(params["before"]) if params.get("before") else None
        after = Cursor.decode(params["after"]) if params.get("after") else None
        data = await self.dash.task_list(where, before=before, after=after)
        query = {"state": where.state.value if where.state else "", "agent": where.agent or "",
                 "parent": where.parent_id or "", "q": where.text or ""}  # fmt: skip
        return self.render(
            request, "tasks.html", nav="tasks", where=where, query=query,
            link=lambda **changes: "/?" + urllib.parse.urlencode(
                {k: v for k, v in {**query, **changes}.items() if v}
            ),
            **data,
        )  # fmt: skip

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        data = await self.dash.task_page(task_id)
        done = request.query_params.get("done")
        return self.render(
            request, "task.html", nav="tasks", task_id=task_id, actions=ACTIONS,
            done=done if done in ACTIONS else None, **data,
        )  # fmt: skip

    async def output(self, request: Request) -> Response:
        text = await self.dash.output_text(request.path_params["task_id"])
        return PlainTextResponse(text)

    async def replay(self, request: Request) -> Response:
        raw = request.query_params.get("version", "")
        if not raw.isdigit():
            raise InvalidInputError("give the version as a whole number: ?version=N")
        data = await self.dash.replay(request.path_params["task_id"], int(raw))
        return Response(_encode(data), media_type="application/json")

    async def locate(self, request: Request) -> Response:
        sequence = int(request.path_params["sequence"])
        found = await self.dash.reader.locate(sequence)
        if found is None:
            raise TaskNotFoundError(f"the event at sequence {sequence}")
        task_id, _version = found
        return RedirectResponse(
            f"/tasks/{urllib.parse.quote(task_id, safe='')}#event-{sequence}", 303
        )

    async def verify(self, request: Request) -> Response:
        result = None
        if request.method == "POST":
            self._check_origin(request)
            result = await self.dash.verify()
        head = await self.dash.store.head()
        return self.render(request, "verify.html", nav="verify", result=result, head=head)

    async def workers(self, request: Request) -> Response:
        data = await self.dash.stats()
        return self.render(request, "workers.html", nav="workers", stats=data, head=data["head"])

    async def stats_json(self, request: Request) -> Response:
        return Response(_encode(await self.dash.stats()), media_type="application/json")

    async def stream(self, request: Request) -> Response:
        params = request.query_params
        task_id = params.get("task")
        view: View = (
            TaskView(self.dash.store, task_id) if task_id else ListView(self._filter(params))
        )
        raw = request.headers.get("last-event-id") or params.get("after") or ""
        after = int(raw) if raw.isdigit() else None
        return StreamingResponse(
            sse(self.dash.hub, view, after),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # -- actions ---------------------------------------------------------------------------------

    def _check_origin(self, request: Request) -> None:
        host = request.headers.get("host", "")
        if not same_origin(request.headers, scheme=request.url.scheme, host=host):
            raise Forbidden("refused: the request did not come from this dashboard's pages")

    async def _form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            raise InvalidInputError("the form is too large")
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise InvalidInputError("expected a form (application/x-www-form-urlencoded)")
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        task_id = request.path_params["task_id"]
        host = request.headers.get("host", "")
        origin_ok = same_origin(request.headers, scheme=request.url.scheme, host=host)
        form = await self._form(request) if origin_ok else {}
        client = self.dash.actions.authorize(
            origin_ok=origin_ok,
            tokens=[
                form.get("token"),
                request.headers.get("x-tasktrail-token"),
                request.cookies.get(self.cookie_name(request)),
            ],
        )
        if action not in ACTIONS:
            raise InvalidInputError(f"unknown action {action[:40]!r}: one of {', '.join(ACTIONS)}")
        await self.dash._task(task_id)
        task = await self.dash.actions.perform(client, action, task_id, form.get("reason", ""))
        return RedirectResponse(f"/tasks/{urllib.parse.quote(task.id, safe='')}?done={action}", 303)


def create_app(dash: Dashboard, *, loopback_only: bool = True) -> Starlette:
    """The web app of an open dashboard."""
    pages = Pages(dash)
    routes = [
        Route("/", pages.with_token(pages.tasks)),
        Route("/tasks/{task_id:path}", pages.with_token(pages.task)),
        Route("/output/{task_id:path}", pages.output),
        Route("/api/replay/{task_id:path}", pages.replay),
        Route("/api/stats", pages.stats_json),
        Route("/log/{sequence:int}", pages.locate),
        Route("/verify", pages.with_token(pages.verify), methods=["GET", "POST"]),
        Route("/workers", pages.with_token(pages.workers)),
        Route("/stream", pages.stream),
        Route("/actions/{action}/{task_id:path}", pages.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Any] = {
        TasktrailError: pages.handle_error,
        Forbidden: pages.handle_error,
        HTTPException: pages.handle_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(Guard, loopback_only=loopback_only)
    return app
