"""Where the client connects and how: target, token, TLS, deadlines and the retry policy."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from meter.client.retry import RetryPolicy

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS for the channel; with a client certificate and key, mutual TLS.

    Paths are read when the channel is made. With no root certificate the system's roots
    are used.
    """

    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(p: Path | None) -> bytes | None:
            return Path(p).read_bytes() if p is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.root_cert),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_cert),
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach a Meter server.

    Attributes:
        target: HOST:PORT; default METER_TARGET or 127.0.0.1:50051.
        token: a bearer token sent as ``authorization: Bearer ...``; default METER_TOKEN.
        tls: TLS settings; None for a plaintext channel (loopback, tests).
        retry: the retry policy of unary calls.
        options: extra gRPC channel options.
    """

    target: str = field(default_factory=lambda: os.environ.get("METER_TARGET") or DEFAULT_TARGET)
    token: str | None = field(default_factory=lambda: os.environ.get("METER_TOKEN") or None)
    tls: Tls | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    options: tuple[tuple[str, int | str], ...] = ()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


# The settings a client was given, the defaults (METER_TARGET, METER_TOKEN) for the rest.
def connection(
    target: str | None,
    token: str | None,
    tls: Tls | None,
    retry: RetryPolicy | None,
    options: Iterable[tuple[str, int | str]],
) -> Connection:
    base = Connection()
    return Connection(
        target=target or base.target,
        token=token if token is not None else base.token,
        tls=tls,
        retry=retry or base.retry,
        options=tuple(options),
    )
