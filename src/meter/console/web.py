"""What every page shares: its session, the CSRF check, rendering, and refusals as pages."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from meter.client import AsyncMeterClient, MeterError, Unauthenticated
from meter.console.access import MAY_NOT, Access
from meter.console.problems import Problem, explain
from meter.console.sessions import COOKIE, Session

if TYPE_CHECKING:
    from meter.console.app import Console


@dataclass(slots=True)
class Ctx:
    """One request to a page: who asks (session), and the console it asks."""

    request: Request
    console: Console
    session: Session
    form: FormData | None = None
    new_session: bool = False

    @property
    def client(self) -> AsyncMeterClient:
        return self.session.client

    @property
    def access(self) -> Access:
        return self.session.access

    @property
    def ws(self) -> str:
        return str(self.request.path_params.get("ws", ""))

    def field(self, name: str, default: str = "") -> str:
        """A form field (POST) or query parameter (GET), stripped."""
        source: Any = self.form if self.form is not None else self.request.query_params
        value = source.get(name, default)
        return str(value).strip() if isinstance(value, str) else default

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return self.console.templates.TemplateResponse(
            self.request, template, {"ctx": self, **values}, status_code=status
        )

    def problem(self, problem: Problem) -> HTMLResponse:
        return self.render("problem.html", problem.status, problem=problem)

    def refused(self, error: MeterError) -> HTMLResponse:
        return self.problem(
            explain(error, target=self.console.settings.target, role=self.access.role,
                    workspace=self.ws)
        )  # fmt: skip

    def not_allowed(self, what: str) -> HTMLResponse:
        return self.problem(
            Problem(
                "Not allowed for your role",
                f"Your token's role ({self.access.role}) may not {what}. Ask an operator for a "
                "token with a role that may.",
                403,
                "ROLE_NOT_ALLOWED",
            )
        )


def request_id(prefix: str) -> str:
    """A request id for one form: made when the form is shown, so a second submit of the
    same form is a replay that the server answers without a second effect."""
    return f"console:{prefix}:{uuid.uuid4()}"


Handler = Callable[[Ctx], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Endpoint:
    """A console page: resolve the session (or send to sign-in), check CSRF on POST, turn a
    server refusal into a readable page."""

    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        found = await console.session_for(request)
        if isinstance(found, Response):
            return found
        session, new = found
        ctx = Ctx(request, console, session, new_session=new)
        if request.method == "POST":
            ctx.form = await request.form()
            sent = ctx.form.get("csrf")
            if not session.csrf_ok(sent if isinstance(sent, str) else None):
                return ctx.problem(
                    Problem(
                        "Form refused",
                        "This form did not come from a page of this console session (its "
                        "CSRF token is missing or stale). Open the page again and resubmit.",
                        403,
                        "CSRF",
                    )
                )
        try:
            response = await handler(ctx)
        except Unauthenticated:
            await console.store.close(session.id)
            return RedirectResponse(
                f"/signin?expired=1&next={quote(request.url.path)}", status_code=303
            )
        except MeterError as e:
            response = ctx.refused(e)
        if new:
            set_cookie(request, response, session)
        return response

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def gated(capability: str) -> Callable[[Handler], Endpoint]:
    """A page (see `page`) for the roles that may `capability`; to any other role it answers
    the not-allowed page (403) without running the handler."""
    what = MAY_NOT[capability]

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def checked(ctx: Ctx) -> Response:
            if not ctx.access.may(capability):
                return ctx.not_allowed(what)
            return await handler(ctx)

        return page(checked)

    return decorate


def set_cookie(request: Request, response: Response, session: Session) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, and Secure when served over TLS."""
    response.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
