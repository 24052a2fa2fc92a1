"""Webhook delivery latency to a local receiver: from a change's commit to its POST.

    python -m bench.webhooks [--events 2000] [--rate 200] [--database-url URL]

A Meter server runs in this process on a fresh database with one endpoint; a receiver in a
process of its own (the standard library's HTTP server) records when each delivery arrives.
Grants are made at a steady rate, each one event; the latency of an event is from the moment its
GrantCredits call returned (the commit had happened) to the moment the receiver read it.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import db as bench_db
from meter import logs
from meter.app import App
from meter.config import Settings
from meter.storage.db import normalize_url
from meterpb.v1 import events_pb2 as epb
from meterpb.v1 import events_pb2_grpc, meter_pb2_grpc
from meterpb.v1 import meter_pb2 as pb

# The receiver runs in a process of its own, as a real one would: it appends "id time" per
# delivery to a file (CLOCK_MONOTONIC is the same clock in every process of the machine).
RECEIVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = open(sys.argv[1], "a", buffering=1)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        out.write(self.headers["webhook-id"] + " " + repr(time.monotonic()) + "\\n")
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_port, flush=True)
server.serve_forever()
"""


def arrivals(path: Path) -> dict[str, float]:
    """The first arrival of each webhook-id."""
    seen: dict[str, float] = {}
    for line in path.read_text().splitlines():
        msg_id, _, at = line.partition(" ")
        seen.setdefault(msg_id, float(at))
    return seen


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def run(url: str, events: int, rate: float, port: int, log: Path) -> None:
    logs.configure("warning")
    app = App(Settings(database_url=url, listen="127.0.0.1:0"), normalize_url(url))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            meter, hooks = meter_pb2_grpc.MeterStub(ch), events_pb2_grpc.EventsStub(ch)
            await hooks.CreateWebhookEndpoint(
                epb.CreateWebhookEndpointRequest(url=f"http://127.0.0.1:{port}/")
            )
            committed: dict[str, float] = {}

            async def one(i: int) -> None:
                ws = f"w{i % 50}"
                answer = await meter.GrantCredits(
                    pb.GrantCreditsRequest(workspace_id=ws, request_id=f"g{i}", amount=1)
                )
                committed[f"evt_{answer.entry.entry_id}_{ws}"] = time.monotonic()

            tasks, start = [], time.monotonic()
            for i in range(events):
                await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            deadline = start + events / rate + 60
            while len(arrivals(log)) < events and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the receiver is another process: poll its record
        arrived = arrivals(log)
        latencies = [(arrived[k] - t) * 1000 for k, t in committed.items() if k in arrived]
        print(
            f"{events} events at {rate:g}/s: {len(latencies)} delivered;"
            f" commit to delivery p50 {pct(latencies, 0.5):.1f} ms,"
            f" p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
        )
    finally:
        await app.stop(grace=1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    bench_db.add_database_url(p)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--rate", type=float, default=200.0, help="events written per second")
    args = p.parse_args()
    url = bench_db.fresh_database(args.database_url)
    log = Path(tempfile.mkdtemp(prefix="meter-hooks-")) / "arrivals"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        asyncio.run(run(url, args.events, args.rate, port, log))
    finally:
        proc.terminate()
        proc.wait()
        bench_db.drop_database(args.database_url, url)


if __name__ == "__main__":
    main()
