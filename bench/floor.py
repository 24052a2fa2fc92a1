"""What a unary call costs the server before any Meter code runs: gRPC's own floor.

Sequential `grpc.health.v1.Health/Check` calls (grpc's own servicer; only Meter's call-log
interceptor wraps it), then sequential `Meter/Reserve` + `Meter/Commit` pairs on one
client, each with the server's CPU per call read from /proc. The first is the least a
unary call can cost this server process; the second is an idle Reserve's and Commit's:

    python -m bench.floor [--calls 3000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import db, load
from bench.server import Server, fund
from meterpb.v1 import meter_pb2 as pb
from meterpb.v1 import meter_pb2_grpc


async def measure(url: str, calls: int) -> None:
    server = Server(url)
    try:
        await server.ready()
        await fund(server.target, ["floor"])
        async with load.channel(server.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            meter = meter_pb2_grpc.MeterStub(ch)
            jobs = iter(range(10**9))

            async def check() -> None:
                await health.Check(health_pb2.HealthCheckRequest())

            async def pair() -> None:
                job = f"floor-{next(jobs)}"
                await meter.Reserve(
                    pb.ReserveRequest(
                        workspace_id="floor", request_id=job, amount=3, operation=load.OPERATION
                    )
                )
                await meter.Commit(pb.CommitRequest(workspace_id="floor", request_id=job, amount=2))

            for name, call, per in (("Health/Check", check, 1), ("Reserve+Commit", pair, 2)):
                for _ in range(200):  # warm connections, caches and prepared statements
                    await call()
                cpu0, t0 = server.cpu_s(), time.perf_counter()
                n = calls // per
                for _ in range(n):
                    await call()
                wall = (time.perf_counter() - t0) / (n * per) * 1e6
                cpu = (server.cpu_s() - cpu0) / (n * per) * 1e6
                print(f"{name:15s} one call at a time: {wall:,.0f} us wall,", end=" ")
                print(f"server {cpu:,.0f} us CPU per call")
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    db.add_database_url(p)
    p.add_argument("--calls", type=int, default=3000)
    args = p.parse_args()
    url = db.fresh_database(args.database_url)
    try:
        asyncio.run(measure(url, args.calls))
    finally:
        db.drop_database(args.database_url, url)


if __name__ == "__main__":
    main()
