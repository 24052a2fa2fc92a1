"""What every client command shares: reaching the server, JSON output, and exit codes.

Exit codes: 0 done; 1 the server refused or failed the call (the reason is printed);
2 a usage error (typer's); 3 the server could not be reached.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meter.client import (
    DeadlineExceeded,
    MeterClient,
    MeterError,
    RetryPolicy,
    Tls,
    Unavailable,
    Unimplemented,
)

REFUSED = 1
UNREACHABLE = 3

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Target = Annotated[
    str,
    typer.Option("--target", envvar="METER_TARGET", help="HOST:PORT of the Meter server."),
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="METER_TOKEN", help="Bearer token.", show_default=False),
]
Timeout = Annotated[
    float,
    typer.Option("--timeout", help="Seconds for the call, retries included."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON, for scripts.")]
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca", envvar="METER_TLS_CA", help="The server's CA: speak TLS.", show_default=False
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        envvar="METER_TLS_CERT",
        help="This client's certificate, for mutual TLS.",
        show_default=False,
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        envvar="METER_TLS_KEY",
        help="This client's private key, for mutual TLS.",
        show_default=False,
    ),
]
DEFAULT_TARGET = "127.0.0.1:50051"
Workspace = Annotated[str, typer.Argument(help="The workspace id.", show_default=False)]
Since = Annotated[str | None, typer.Option("--since", help="From this date (ISO, UTC).")]
Until = Annotated[str | None, typer.Option("--until", help="Before this date (ISO, UTC).")]
TlsFiles = tuple[Path | None, Path | None, Path | None]


def connect(
    target: str,
    token: str | None,
    timeout: float,
    tls_files: TlsFiles = (None, None, None),
) -> MeterClient:
    """A client whose retries all fit in `timeout` seconds; TLS from (ca, cert, key)."""
    policy = RetryPolicy(
        max_attempts=4,
        initial_backoff=0.1,
        max_backoff=1.0,
        attempt_timeout=timeout,
        budget=timeout,
    )
    return MeterClient(target, token=token or None, tls=tls(*tls_files), retry=policy)


def tls(ca: Path | None, cert: Path | None, key: Path | None) -> Tls | None:
    """TLS for client commands (--tls-ca, and --tls-cert/--tls-key for mutual TLS, or
    METER_TLS_CA/CERT/KEY); plaintext without any of them."""
    if not (ca or cert or key):
        return None
    return Tls(root_cert=ca, client_cert=cert, client_key=key)


@contextmanager
def reporting(target: str) -> Iterator[None]:
    """Turn the client's exceptions into a printed reason and the command's exit code."""
    # The server's words are text, not markup: "[a-z0-9_.-]" in a message must print as it is.
    try:
        yield
    except (Unavailable, DeadlineExceeded) as e:
        err.print(f"[red]error:[/] cannot reach Meter at {escape(target)}: {escape(e.message)}")
        raise typer.Exit(UNREACHABLE) from None
    except Unimplemented as e:
        err.print(
            f"[red]error:[/] the server at {escape(target)} does not serve this yet: "
            f"{escape(e.message)}"
        )
        raise typer.Exit(REFUSED) from None
    except MeterError as e:
        err.print(f"[red]refused:[/] {escape(e.reason)}: {escape(e.message)}")
        for v in e.violations:
            err.print(f"  {escape(v.field)}: {escape(v.description)}")
        for key, value in sorted(e.metadata.items()):
            err.print(f"  {escape(key)} = {escape(value)}")
        raise typer.Exit(REFUSED) from None


@contextmanager
def session(
    target: str,
    token: str | None,
    timeout: float,
    tls_files: TlsFiles = (None, None, None),
) -> Iterator[MeterClient]:
    """What every command does around its calls: connect (see `connect`), and turn the
    client's exceptions into a printed reason and the exit code (see `reporting`)."""
    with reporting(target), connect(target, token, timeout, tls_files) as meter:
        yield meter


@dataclass(frozen=True)
class Remote:
    """The options every client command takes: which server, how, and whether to print JSON."""

    target: str
    token: str | None
    timeout: float
    tls_files: TlsFiles
    json: bool = False

    def session(self) -> AbstractContextManager[MeterClient]:
        """`session` with these options."""
        return session(self.target, self.token, self.timeout, self.tls_files)

    def printed_json(self, message: Message | Sequence[Message]) -> bool:
        """With --json, print the message (a list of them: a JSON array) as JSON (see
        `as_dict`) and say so."""
        if self.json:
            if isinstance(message, Message):
                print_json(as_dict(message))
            else:
                print_json([as_dict(m) for m in message])
        return self.json


def client_command(
    timeout: float = 10.0, json: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the client options after its own: --json (unless json=False), --target,
    --token, --tls-ca, --tls-cert, --tls-key and --timeout (default `timeout` seconds).

    The command takes them as its first parameter, `remote: Remote`.
    """
    shared = [
        ("target", Target, DEFAULT_TARGET),
        ("token", Token, None),
        ("tls_ca", TlsCa, None),
        ("tls_cert", TlsCert, None),
        ("tls_key", TlsKey, None),
        ("timeout", Timeout, timeout),
    ]
    if json:
        shared.insert(0, ("json", Json, False))

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())
        if not own or own[0].name != "remote":
            raise TypeError(f"{command.__name__} must take `remote: Remote` first")
        params = own[1:] + [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
            for name, a, d in shared
        ]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            remote = Remote(
                target=kwargs.pop("target"),
                token=kwargs.pop("token"),
                timeout=kwargs.pop("timeout"),
                tls_files=(kwargs.pop("tls_ca"), kwargs.pop("tls_cert"), kwargs.pop("tls_key")),
                json=kwargs.pop("json", False),
            )
            command(remote, *args, **kwargs)

        run.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return run

    return decorate


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON of a message with field names as in the proto and int64 as numbers.

    Numbers instead of proto3 JSON's strings, because jq and spreadsheets should add
    credits up; json_format.ParseDict reads both back into the same message.
    """
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message.DESCRIPTOR, data)
    return data


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _numbers(descriptor: Any, data: dict[str, Any]) -> None:
    for f in descriptor.fields:
        if f.name not in data:
            continue
        value = data[f.name]
        repeated = f.is_repeated
        if f.type in _INT64:
            data[f.name] = [int(v) for v in value] if repeated else int(value)
        elif f.message_type is not None:
            sub = f.message_type
            if sub.GetOptions().map_entry or sub.full_name.startswith("google.protobuf."):
                continue
            for item in value if repeated else [value]:
                _numbers(sub, item)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(
    title: str,
    columns: Iterable[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Collection[str] = (),
    no_wrap: Collection[str] = (),
) -> Table:
    """A result table as the commands print them: the title on the left, then `columns` (the
    ones in `right` right-justified, as numbers are; those in `no_wrap` on one line) and
    `rows`."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=c in no_wrap)
    for row in rows:
        t.add_row(*row)
    return t


def when(text: str | None) -> datetime | None:
    """An ISO date or date-time from the command line; naive ones are UTC."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date (2025-06-01 or 2025-06-01T12:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def enum_name(name: str, prefix: str) -> str:
    """HOLD_STATE_HELD -> held."""
    return name.removeprefix(prefix).lower()


def timestamp(message: Any) -> str:
    if not message.seconds and not message.nanos:
        return ""
    return str(message.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S"))
