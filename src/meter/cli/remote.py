"""What every client command shares: reaching the server, JSON output, and exit codes.

Exit codes: 0 done; 1 the server refused or failed the call (the reason is printed);
2 a usage error (typer's); 3 the server could not be reached.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console

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


def connect(
    target: str,
    token: str | None,
    timeout: float,
    tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None),
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
    try:
        yield
    except (Unavailable, DeadlineExceeded) as e:
        err.print(f"[red]error:[/] cannot reach Meter at {target}: {e.message}")
        raise typer.Exit(UNREACHABLE) from None
    except Unimplemented as e:
        err.print(f"[red]error:[/] the server at {target} does not serve this yet: {e.message}")
        raise typer.Exit(REFUSED) from None
    except MeterError as e:
        err.print(f"[red]refused:[/] {e.reason}: {e.message}")
        for v in e.violations:
            err.print(f"  {v.field}: {v.description}")
        for key, value in sorted(e.metadata.items()):
            err.print(f"  {key} = {value}")
        raise typer.Exit(REFUSED) from None


@contextmanager
def session(
    target: str,
    token: str | None,
    timeout: float,
    tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None),
) -> Iterator[MeterClient]:
    """What every command does around its calls: connect (see `connect`), and turn the
    client's exceptions into a printed reason and the exit code (see `reporting`)."""
    with reporting(target), connect(target, token, timeout, tls_files) as meter:
        yield meter


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
