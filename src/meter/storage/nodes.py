"""The ledger's connections to the nodes that hold shard groups, and the map that routes to them.

On plain PostgreSQL there is one pool, to the database Meter was given. On Citus there is one
pool per node that holds shard groups (a worker; the coordinator too if it holds some), made
from the given URL with the node's host and port: a batch runs where its shard group is, so
its statements execute locally there, in a transaction of that node alone. The shard map is
read from the coordinator (the given URL) at start and again every `refresh_s`, and at once
when a batch finds its shard gone (meter_load's MTR02): a moved shard's batches follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import psycopg_pool
import structlog

from meter.storage import db
from meter.storage.dburl import DatabaseUrl
from meter.storage.shards import DISTRIBUTED_SQL, SHARDS_SQL, Node, ShardGroup, ShardMap, shard_map

log = structlog.get_logger("meter.nodes")

# How long a node's pool is given to connect when it is opened.
OPEN_WAIT_S = 30.0


async def read_map(url: str) -> ShardMap:
    """The shard map as the database at `url` (the coordinator) has it."""
    async with await psycopg.AsyncConnection.connect(
        db.libpq_url(url), autocommit=True, connect_timeout=5
    ) as conn:
        found = await (await conn.execute(DISTRIBUTED_SQL)).fetchone()
        if found is None or not found[0]:
            return ShardMap.single()
        rows = await (await conn.execute(SHARDS_SQL)).fetchall()
    return shard_map(rows)


class LedgerNodes:
    """One pool per node that holds shard groups; `pool(group)` is where a batch runs."""

    def __init__(
        self,
        url: str,
        size: int,
        timeout: float,
        *,
        require_sync_standby: bool = False,
        refresh_s: float = 5.0,
        connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
    ) -> None:
        self.url = url
        self.connection_class = connection_class
        self.size = size
        self.timeout = timeout
        self.require_sync_standby = require_sync_standby
        self.refresh_s = refresh_s
        self.map = ShardMap.single()
        self._pools: dict[Node | None, psycopg_pool.AsyncConnectionPool[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stale = asyncio.Event()

    @property
    def citus(self) -> bool:
        return self.map.distributed

    async def open(self) -> None:
        self.map = await read_map(self.url)
        for node in self.map.nodes():
            await self._pool_for(node, OPEN_WAIT_S)
        if self.citus:
            self._task = asyncio.create_task(self._follow(), name="shard-map")
            log.info("shards.mapped", groups=len(self.map.groups), nodes=len(self.map.nodes()))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pool in self._pools.values():
            await pool.close()

    def group(self, workspace_id: str) -> ShardGroup:
        return self.map.group(workspace_id)

    def pool(self, group: ShardGroup) -> psycopg_pool.AsyncConnectionPool[Any]:
        """The pool of the node that holds `group` (the given database's on plain PostgreSQL).
        A node the map names but no pool serves yet (a shard moved there) gets one when the
        map is refreshed; until then, the group's batches go where the map said before."""
        found = self._pools.get(group.node)
        if found is None:
            self.stale()
            return next(iter(self._pools.values()))
        return found

    def pools(self) -> list[psycopg_pool.AsyncConnectionPool[Any]]:
        return list(self._pools.values())

    def stale(self) -> None:
        """A batch met a shard that is not where the map says: read the map again now."""
        self._stale.set()

    async def refresh(self) -> None:
        found = await read_map(self.url)
        for node in found.nodes():
            if node not in self._pools:
                await self._pool_for(node, OPEN_WAIT_S)
        if not found.same_layout(self.map):
            log.info("shards.moved", groups=len(found.groups), nodes=len(found.nodes()))
        self.map = found

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stale.wait(), self.refresh_s)
            self._stale.clear()
            try:
                await self.refresh()
            except (OSError, psycopg.Error) as e:
                # The coordinator is away: batches go on with the map they have.
                log.warning("shards.unread", error=str(e).splitlines()[0] if str(e) else "")

    async def _pool_for(
        self, node: Node | None, wait_s: float
    ) -> psycopg_pool.AsyncConnectionPool[Any]:
        url = self.url
        if node is not None:
            url = DatabaseUrl.parse(url).with_node(node.host, node.port).sqlalchemy()
        pool = db.ledger_pool(
            url,
            self.size,
            timeout=self.timeout,
            require_sync_standby=self.require_sync_standby,
            citus=node is not None,
            connection_class=self.connection_class,
        )
        self._pools[node] = pool
        if node is None:
            await pool.open(wait=True, timeout=wait_s)
            return pool
        # A node that is away does not keep the server from serving the others' groups: its
        # pool connects when the node is back, and its groups answer UNAVAILABLE till then.
        await pool.open(wait=False)
        try:
            await pool.wait(timeout=min(wait_s, 10.0))
        except psycopg_pool.PoolTimeout:
            log.warning("shards.node_away", host=node.host, port=node.port)
        return pool
