"""Shard groups: which workspaces share a transaction's shard, and which node holds it.

On plain PostgreSQL every workspace is in the one shard group, on the one database. On Citus
(DESIGN.md §8) the workspace-scoped tables are distributed by workspace_id and co-located, so
one hash range of workspace ids is one shard of every such table: a shard group. A ledger
batch holds the commands of one shard group and runs on the node that has it, so that no
transaction spans two nodes (no two-phase commit) and nodes work side by side.

The map is read from Citus's metadata (pg_dist_shard, pg_dist_placement, pg_dist_node) and
read again as shards move. A workspace's shard is found as Citus finds it: PostgreSQL's
hashtext() of its id, placed in the shards' hash ranges; `hashtext` below is that function
(PostgreSQL's hash_bytes, Bob Jenkins' lookup3), checked against the database by the tests.

Each shard group also has a feed key: a text that Citus places in that group (found from its
hash range). The events outbox and the webhook tables are distributed by it, so a shard
group's events, delivery leases and fan-out cursors are read and written by router queries
for that one key, on that one node.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def hashtext(text: str) -> int:
    """PostgreSQL's hashtext(text) for a deterministic collation: a signed 32-bit int."""
    k = text.encode()
    n = len(k)
    a = b = c = (0x9E3779B9 + n + 3923095) & _M
    i = 0
    while n >= 12:
        a = (a + int.from_bytes(k[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(k[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(k[i + 8 : i + 12], "little")) & _M
        a = (a - c) & _M ^ _rot(c, 4)
        c = (c + b) & _M
        b = (b - a) & _M ^ _rot(a, 6)
        a = (a + c) & _M
        c = (c - b) & _M ^ _rot(b, 8)
        b = (b + a) & _M
        a = (a - c) & _M ^ _rot(c, 16)
        c = (c + b) & _M
        b = (b - a) & _M ^ _rot(a, 19)
        a = (a + c) & _M
        c = (c - b) & _M ^ _rot(b, 4)
        b = (b + a) & _M
        i += 12
        n -= 12
    tail = k[i:]
    if n >= 9:  # the lowest byte of c is the length's (in lookup3): the tail starts above it
        c = (c + (int.from_bytes(tail[8:11], "little") << 8)) & _M
    if n >= 5:
        b = (b + int.from_bytes(tail[4:8], "little")) & _M
    if n >= 1:
        a = (a + int.from_bytes(tail[0:4], "little")) & _M
    c = ((c ^ b) - _rot(b, 14)) & _M
    a = ((a ^ c) - _rot(c, 11)) & _M
    b = ((b ^ a) - _rot(a, 25)) & _M
    c = ((c ^ b) - _rot(b, 16)) & _M
    a = ((a ^ c) - _rot(c, 4)) & _M
    b = ((b ^ a) - _rot(a, 14)) & _M
    c = ((c ^ b) - _rot(b, 24)) & _M
    return c - (1 << 32) if c & 0x80000000 else c


# Feed keys start with a character no workspace id has ([A-Za-z0-9._:-]), so none is one.
FEED_KEY_PREFIX = "~"


def feed_key_for(low: int, high: int) -> str:
    """The first "~N" whose hash lies in [low, high]: a key Citus places in that range."""
    n = 0
    while not low <= hashtext(f"{FEED_KEY_PREFIX}{n}") <= high:
        n += 1
    return f"{FEED_KEY_PREFIX}{n}"


@dataclass(frozen=True, slots=True)
class Node:
    """A database node: where a shard group's batches run (host and port of its URL)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ShardGroup:
    """One hash range of workspace ids: `shard_id` is the workspaces table's shard of it
    (0 on plain PostgreSQL), `feed_key` the key its events are stored under, `node` the node
    that holds it (None: the database the server was given)."""

    shard_id: int
    low: int
    high: int
    feed_key: str
    node: Node | None = None


# On plain PostgreSQL: one group, on the one database; its events are stored under ''.
WHOLE = ShardGroup(0, -(2**31), 2**31 - 1, "")


class ShardMap:
    """The shard groups in hash order, and each workspace's (cached: the hash is Python)."""

    __slots__ = ("_cache", "_lows", "distributed", "groups")

    def __init__(self, groups: Sequence[ShardGroup], *, distributed: bool) -> None:
        self.groups = sorted(groups, key=lambda g: g.low)
        self._lows = [g.low for g in self.groups]
        self.distributed = distributed
        self._cache: dict[str, ShardGroup] = {}

    @classmethod
    def single(cls) -> ShardMap:
        return cls([WHOLE], distributed=False)

    def group(self, workspace_id: str) -> ShardGroup:
        """The shard group of a workspace (its events' feed key, its node)."""
        if not self.distributed:
            return self.groups[0]
        found = self._cache.get(workspace_id)
        if found is None:
            i = bisect.bisect_right(self._lows, hashtext(workspace_id)) - 1
            found = self.groups[i]
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[workspace_id] = found
        return found

    def by_shard(self, shard_id: int) -> ShardGroup | None:
        return next((g for g in self.groups if g.shard_id == shard_id), None)

    def nodes(self) -> list[Node | None]:
        """The nodes that hold groups, each once, in a stable order."""
        seen: dict[Node | None, None] = {}
        for g in self.groups:
            seen[g.node] = None
        return list(seen)

    def same_layout(self, other: ShardMap) -> bool:
        """Whether `other` has the same groups on the same nodes."""
        return self.groups == other.groups


class Shards(Protocol):
    """Where the shard map is kept (meter.storage.nodes.LedgerNodes follows it as it moves)."""

    @property
    def map(self) -> ShardMap: ...

    def group(self, workspace_id: str) -> ShardGroup: ...


class OneShard:
    """Shards of plain PostgreSQL: one group, on the one database."""

    map = ShardMap.single()

    def group(self, workspace_id: str) -> ShardGroup:
        return WHOLE


# Citus's metadata: the workspaces table's shards, each with the node that holds it (a
# primary placement on an active node; hash-distributed tables have one placement).
SHARDS_SQL = """
SELECT s.shardid, s.shardminvalue::int, s.shardmaxvalue::int, n.nodename, n.nodeport
  FROM pg_dist_shard s
  JOIN pg_dist_placement p ON p.shardid = s.shardid
  JOIN pg_dist_node n ON n.groupid = p.groupid AND n.noderole = 'primary'
 WHERE s.logicalrelid = 'workspaces'::regclass
 ORDER BY 2
"""

# Whether workspaces is a distributed table here (Citus installed and `meter migrate` run).
DISTRIBUTED_SQL = """
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')
   AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relname = 'pg_dist_partition')
"""


def shard_map(rows: Iterable[Sequence[Any]]) -> ShardMap:
    """A map from SHARDS_SQL's rows."""
    groups = [
        ShardGroup(
            int(sid), int(low), int(high), feed_key_for(int(low), int(high)), Node(h, int(p))
        )
        for sid, low, high, h, p in rows
    ]
    return ShardMap(groups, distributed=True) if groups else ShardMap.single()
