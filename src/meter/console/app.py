"""The console's composition root: settings, the session store, the routes, and uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meter.client import AsyncMeterClient, MeterError, RetryPolicy, Tls, Unauthenticated
from meter.console import format
from meter.console.access import OPEN, PROBE
from meter.console.pages import ROUTES
from meter.console.sessions import COOKIE, Session, SessionStore

HERE = Path(__file__).parent

# A page waits a few seconds at most: a person would rather read "cannot be reached" than
# watch a spinner while the client retries for a minute.
POLICY = RetryPolicy(
    max_attempts=3, initial_backoff=0.1, max_backoff=0.5, attempt_timeout=5.0, budget=6.0
)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """Where the console listens and which Meter server it is a client of."""

    target: str = "127.0.0.1:50051"
    tls: Tls | None = None
    listen: str = "127.0.0.1:8080"
    https_cert: Path | None = None
    https_key: Path | None = None


class Console:
    """The state every page shares."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.store = SessionStore()
        self.templates = Jinja2Templates(directory=HERE / "templates")
        format.install(self.templates.env)
        self._anonymous: AsyncMeterClient | None = None
        self.open_server: bool | None = None

    def client(self, token: str | None) -> AsyncMeterClient:
        return AsyncMeterClient(
            self.settings.target, token=token, tls=self.settings.tls, retry=POLICY
        )

    @property
    def anonymous(self) -> AsyncMeterClient:
        if self._anonymous is None:
            self._anonymous = self.client(None)
        return self._anonymous

    async def server_is_open(self) -> bool | None:
        """Whether the server asks for no credentials; None while it cannot be reached.

        Learnt once: a server does not switch authentication on or off while it runs.
        """
        if self.open_server is None:
            try:
                await self.anonymous.balance(PROBE)
                self.open_server = True
            except Unauthenticated:
                self.open_server = False
            except MeterError as e:
                if not e.retryable:
                    self.open_server = True
        return self.open_server

    async def session_for(self, request: Request) -> tuple[Session, bool] | Response:
        """The request's session and whether it is new, or where to go instead."""
        found = self.store.get(request.cookies.get(COOKIE))
        if found is not None:
            return found, False
        is_open = await self.server_is_open()
        if is_open:
            # No sign-in, but still a session: its CSRF token guards the forms.
            session = await self.store.open(
                self.anonymous, OPEN, signed_in=False, owns_client=False
            )
            return session, True
        if is_open is None:
            from meter.console.pages.auth import unreachable

            return unreachable(request, self)
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)

    async def close(self) -> None:
        for s in self.store.all():
            await self.store.close(s.id)
        if self._anonymous is not None:
            await self._anonymous.close()


class SecurityHeaders:
    """Headers on every response: no framing, no inline scripts, no caching of pages."""

    HEADERS = (
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )  # fmt: skip

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console as an ASGI application."""
    console = Console(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await console.close()

    async def crashed(request: Request, exc: Exception) -> Response:
        from meter.console.pages.auth import crashed as page

        return page(request, console)

    app = Starlette(
        routes=[*ROUTES, Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        lifespan=lifespan,
        exception_handlers={500: crashed},
    )
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    return app


def run(settings: ConsoleSettings) -> None:
    """Serve the console until interrupted."""
    import uvicorn

    host, _, port = settings.listen.rpartition(":")
    uvicorn.run(
        create_app(settings),
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        ssl_certfile=settings.https_cert,
        ssl_keyfile=settings.https_key,
        log_level="warning",
        # Live pages hold a stream open; do not wait for them on shutdown.
        timeout_graceful_shutdown=2,
    )
