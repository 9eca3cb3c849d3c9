"""RedisLedger: budgets shared by every process on every host. ``redis://host:port/db``.

Every reserve (with the commits it settles), commit, settle and release is ONE Lua script
(registered once, run with EVALSHA, reloaded on NOSCRIPT): one round trip, atomic across all
of its charges. All keys of one ledger share the hash tag ``{bw:<namespace>}``, so the
scripts also run on Redis Cluster and managed services that require single-slot scripts.
Keys expire with their window (plus a margin); a reservation is a field of its bucket's
holds hash, ``amount lease_until``, that no longer counts once its lease passed and is
deleted by the next script touching it.

URI: ``redis://[:password@]host:port/db`` (also ``rediss://`` and ``unix://``) with optional
``namespace=`` (default ``default``), ``timeout=`` (seconds to wait for a reply, default 1)
and ``connect_timeout=`` (default 0.5); other query options go to redis-py, and one it would
not take is a ``ValueError`` when the ledger is made (``redis_uri``). Making the ledger does
not connect. Any connection error, timeout or server error raises ``LedgerUnavailable`` and
the warden applies its fault policy.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the redis:// ledger needs redis-py: pip install 'budgetwarden[redis]'"
    ) from exc

from ..errors import LedgerUnavailable
from .base import (
    COMMIT_MEMORY_SECONDS,
    LIMIT_SLACK,
    BucketState,
    Charge,
    ReserveOutcome,
    Settlement,
    latest_states,
)
from .redis_uri import OURS, check_db_path, check_options, seconds

__all__ = ["RedisLedger"]

#: Keys outlive their window (and holds their lease) by this much, for clock skew and late
#: commits of calls that started before the window ended.
_MARGIN_SECONDS = 600.0
_FAULTS = (RedisConnectionError, RedisTimeoutError, ResponseError)

_LUA_HELPERS = f"""
local LIMIT_SLACK = {LIMIT_SLACK!r}
local function fmt(x) return string.format('%.17g', x) end
local function live(holds, now, prune)
  local total = 0
  local flat = redis.call('HGETALL', holds)
  for j = 1, #flat, 2 do
    local v = flat[j + 1]
    local sep = string.find(v, ' ', 1, true)
    if tonumber(string.sub(v, sep + 1)) > now then
      total = total + tonumber(string.sub(v, 1, sep - 1))
    elseif prune then
      redis.call('HDEL', holds, flat[j])
    end
  end
  return total
end
local function touch(bucket, expires, ttl)
  redis.call('HSETNX', bucket, 'e', expires)
  if ttl > 0 then redis.call('PEXPIRE', bucket, ttl) end
end
local function extend(key, ttl)
  local current = redis.call('PTTL', key)
  if current < ttl then redis.call('PEXPIRE', key, ttl) end
end
local function drop(record, rid)
  for _, holds in ipairs(redis.call('SMEMBERS', record)) do redis.call('HDEL', holds, rid) end
  redis.call('DEL', record)
end
-- Settlements from KEYS[k] and ARGV[a] on: each is a commit (states aside). ARGV: done marker
-- ttl ms, #settlements, then per settlement: rid, #charges, per charge: amount, expires_at,
-- bucket ttl ms. KEYS per settlement: record, done marker, bucket per charge.
local function settle(k, a)
  local done_ttl, count = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, count do
    local rid, m = ARGV[a], tonumber(ARGV[a + 1])
    local first = redis.call('SET', KEYS[k + 1], '1', 'NX', 'PX', done_ttl)
    drop(KEYS[k], rid)
    a, k = a + 2, k + 2
    for _ = 1, m do
      if first then
        local c = tonumber(redis.call('HGET', KEYS[k], 'c') or '0') + tonumber(ARGV[a])
        redis.call('HSET', KEYS[k], 'c', fmt(c))
        touch(KEYS[k], ARGV[a + 1], tonumber(ARGV[a + 2]))
      end
      a, k = a + 3, k + 1
    end
  end
end
"""

# KEYS: cancels, record, then (bucket, holds) per charge, then the settlements' keys.
# ARGV: rid, now, lease_until, hold ttl ms, #charges, #watch, watch..., then per charge:
#       amount, limit, expires_at, bucket ttl ms; then the settlements (see ``settle``).
# The settlements are applied first and stay applied whatever the reservation's outcome.
_RESERVE = (
    _LUA_HELPERS
    + """
local rid, now, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local hold_ttl, n, nwatch = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local base = 6 + nwatch
if #ARGV > base + 4 * n then settle(3 + 2 * n, base + 4 * n + 1) end
for i = 1, nwatch do
  if redis.call('HEXISTS', KEYS[1], ARGV[6 + i]) == 1 then return {'cancelled', ARGV[6 + i]} end
end
local committed, reserved = {}, {}
for i = 1, n do
  local a = base + (i - 1) * 4
  local amount = tonumber(ARGV[a + 1])
  local c = tonumber(redis.call('HGET', KEYS[2 * i + 1], 'c') or '0')
  local r = live(KEYS[2 * i + 2], now, true)
  if amount > 0 and c + r + amount > tonumber(ARGV[a + 2]) + LIMIT_SLACK then
    return {'refused', tostring(i), fmt(c), fmt(r)}
  end
  committed[i], reserved[i] = c, r
end
local out = {'ok'}
for i = 1, n do
  local a = base + (i - 1) * 4
  local holds = KEYS[2 * i + 2]
  touch(KEYS[2 * i + 1], ARGV[a + 3], tonumber(ARGV[a + 4]))
  redis.call('HSET', holds, rid, ARGV[a + 1] .. ' ' .. lease)
  extend(holds, hold_ttl)
  redis.call('SADD', KEYS[2], holds)
  out[#out + 1] = fmt(committed[i])
  out[#out + 1] = fmt(reserved[i])
end
if n > 0 then extend(KEYS[2], hold_ttl) end
return out
"""
)

# KEYS and ARGV: the settlements only (see ``settle``). Returns each settlement's buckets'
# committed spend after all of them, in the order of their KEYS.
_SETTLE = (
    _LUA_HELPERS
    + """
settle(1, 1)
local out, k, a = {}, 1, 3
for _ = 1, tonumber(ARGV[2]) do
  local m = tonumber(ARGV[a + 1])
  a, k = a + 2 + 3 * m, k + 2
  for _ = 1, m do
    out[#out + 1] = fmt(tonumber(redis.call('HGET', KEYS[k], 'c') or '0'))
    k = k + 1
  end
end
return out
"""
)

# KEYS: record, done marker, then (bucket, holds) per charge.
# ARGV: rid, now, done marker ttl ms, then per charge: amount, expires_at, bucket ttl ms.
# A reservation id commits once: a retry after a timeout (or a replay) adds nothing.
_COMMIT = (
    _LUA_HELPERS
    + """
local now = tonumber(ARGV[2])
local first = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3])
drop(KEYS[1], ARGV[1])
local out = {}
for i = 1, (#KEYS - 2) / 2 do
  local a = 3 + (i - 1) * 3
  local bucket = KEYS[2 * i + 1]
  local c = tonumber(redis.call('HGET', bucket, 'c') or '0')
  if first then
    c = c + tonumber(ARGV[a + 1])
    redis.call('HSET', bucket, 'c', fmt(c))
    touch(bucket, ARGV[a + 2], tonumber(ARGV[a + 3]))
  end
  out[#out + 1] = fmt(c)
  out[#out + 1] = fmt(live(KEYS[2 * i + 2], now, true))
end
return out
"""
)

# KEYS: record. ARGV: rid.
_RELEASE = _LUA_HELPERS + "drop(KEYS[1], ARGV[1])\nreturn 1\n"

# KEYS: bucket, holds. ARGV: now.
_STATE = (
    _LUA_HELPERS
    + """
local now = tonumber(ARGV[1])
local e = redis.call('HGET', KEYS[1], 'e')
if not e or tonumber(e) <= now then return {'0', '0'} end
return {fmt(tonumber(redis.call('HGET', KEYS[1], 'c') or '0')), fmt(live(KEYS[2], now, false))}
"""
)


# KEYS: the values index. ARGV: lowest and highest member, prefix of value keys.
# Members whose value expired are dropped from the index on the way.
_LIST_VALUES = """
local out = {}
for _, k in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2])) do
  if redis.call('EXISTS', ARGV[3] .. k) == 1 then out[#out + 1] = k
  else redis.call('ZREM', KEYS[1], k) end
end
return out
"""


@dataclass(frozen=True, slots=True)
class _Options:
    url: str  # for redis-py, without our own options
    display: str  # for messages: the password masked
    namespace: str
    timeout: float
    connect_timeout: float


#: Connections of an event loop's pool before calls wait for one (``?max_connections=``).
ASYNC_MAX_CONNECTIONS = 100


def _masked(parts: SplitResult) -> str:
    """The URI for messages and events, its password (``:pw@`` or ``?password=``) masked."""
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _parse_uri(uri: str) -> _Options:
    """Split budgetwarden's options off a redis URI, after checking every option and the
    database number; mask its password for messages."""
    parts = urlsplit(uri)
    display = _masked(parts)
    check_options(
        (k for k, _ in parse_qsl(parts.query, keep_blank_values=True)), parts.scheme, display
    )
    check_db_path(parts.path, parts.scheme, display)
    ours = {k: v for k, v in parse_qsl(parts.query) if k in OURS}
    theirs = [(k, v) for k, v in parse_qsl(parts.query) if k not in OURS]
    return _Options(
        url=urlunsplit(parts._replace(query=urlencode(theirs))),
        display=display,
        namespace=ours.get("namespace", "default"),
        timeout=seconds(ours, "timeout", "1.0", display),
        connect_timeout=seconds(ours, "connect_timeout", "0.5", display),
    )


def _num(value: float) -> str:
    """A float as Lua's ``tonumber`` reads it back exactly (infinities included)."""
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(float(value))


def _ttl_ms(until: float, now: float) -> int:
    """Milliseconds a key must live to outlast ``until`` (by the margin); -1 for never."""
    if math.isinf(until):
        return -1
    return max(math.ceil((until - now + _MARGIN_SECONDS) * 1000), 1)


@dataclass(slots=True)
class _Scripts:
    reserve: Any
    commit: Any
    settle: Any
    release: Any
    state: Any
    list_values: Any


def _register(client: Any) -> _Scripts:
    """The ledger's scripts, registered on a (sync or async) client: EVALSHA, NOSCRIPT-safe."""
    return _Scripts(
        reserve=client.register_script(_RESERVE),
        commit=client.register_script(_COMMIT),
        settle=client.register_script(_SETTLE),
        release=client.register_script(_RELEASE),
        state=client.register_script(_STATE),
        list_values=client.register_script(_LIST_VALUES),
    )


class RedisLedger:
    """A ledger in Redis, shared by every process that opens the same URI and namespace.

    ``RedisLedger("redis://127.0.0.1:6379/0?namespace=prod&timeout=0.5")``. Sync methods use
    redis-py; the async twins use ``redis.asyncio`` with one client per event loop.
    """

    settles = True

    def __init__(self, uri: str) -> None:
        options = _parse_uri(uri)
        self.uri = options.display
        self.namespace = options.namespace
        self._options = options
        self._prefix = f"{{bw:{quote(options.namespace, safe='')}}}:"
        self._client = redis.Redis.from_url(
            options.url,
            decode_responses=True,
            socket_timeout=options.timeout,
            socket_connect_timeout=options.connect_timeout,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
        )
        self._scripts = _register(self._client)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncSide] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ Ledger protocol
    def reserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Apply the settlements, then reserve all charges or none, within each bucket's
        limit: one script."""
        keys, args = self._reserve_call(reservation_id, charges, now, lease_until, watch, settle)
        with self._faults():
            reply = self._scripts.reserve(keys=keys, args=args)
        return _reserve_outcome(reply, charges)

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts: one script."""
        keys, args = self._commit_call(reservation_id, charges, now)
        with self._faults():
            reply = self._scripts.commit(keys=keys, args=args)
        return _commit_states(reply, charges)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> tuple[BucketState, ...]:
        """Apply several commits, each as ``commit`` would: one script. The buckets they
        charged, after them (their committed spend; reservations are not read)."""
        if not settlements:
            return ()
        keys, args = self._settle_call(settlements, now)
        with self._faults():
            reply = self._scripts.settle(keys=keys, args=args)
        return _settled_states(reply, settlements)

    def release(self, reservation_id: str, *, now: float) -> None:
        """Drop the reservation; nothing is spent."""
        with self._faults():
            self._scripts.release(keys=[self._record(reservation_id)], args=[reservation_id])

    def state(self, key: str, *, now: float, limit: float = 0.0) -> BucketState:
        """A bucket's committed spend and live reservations (zero once its window ended)."""
        with self._faults():
            reply = self._scripts.state(keys=self._bucket_keys(key), args=[_num(now)])
        return BucketState(key, float(reply[0]), float(reply[1]), limit)

    def mark_once(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is marked (until it expires, plus the margin)."""
        wall = time.time()  # the server's expiry runs on real time, whatever the warden's clock
        ttl = _ttl_ms(max(expires_at, wall), wall)
        with self._faults():
            done = self._client.set(
                self._prefix + "m:" + key, "1", nx=True, px=ttl if ttl > 0 else None
            )
        return bool(done)

    def cancel(self, target: str, *, reason: str = "") -> None:
        """Set a cancel marker, kept until lifted."""
        with self._faults():
            self._client.hset(self._cancels, target, reason)

    def uncancel(self, target: str) -> None:
        """Lift a cancel marker."""
        with self._faults():
            self._client.hdel(self._cancels, target)

    def cancelled(self, targets: Sequence[str]) -> str | None:
        """The first of ``targets`` that is cancelled, or None."""
        if not targets:
            return None
        with self._faults():
            found = self._client.hmget(self._cancels, list(targets))
        return next((t for t, hit in zip(targets, found, strict=True) if hit is not None), None)

    def put_value(self, key: str, value: str, *, expires_at: float | None = None) -> None:
        """Store ``value`` under ``key`` (until ``expires_at``, epoch seconds, if given)."""
        at = None if expires_at is None else max(math.ceil(expires_at * 1000), 1)
        with self._faults():
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._prefix + "v:" + key, value, pxat=at)
            pipe.zadd(self._values_index, {key: 0})
            pipe.execute()

    def get_value(self, key: str) -> str | None:
        """The value stored under ``key``, or None (also once it expired)."""
        with self._faults():
            value = self._client.get(self._prefix + "v:" + key)
        return None if value is None else str(value)

    def delete_value(self, key: str) -> None:
        """Forget ``key``."""
        with self._faults():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._prefix + "v:" + key)
            pipe.zrem(self._values_index, key)
            pipe.execute()

    def list_values(self, prefix: str) -> list[str]:
        """Every unexpired key that starts with ``prefix``, sorted."""
        low = b"[" + prefix.encode()
        with self._faults():
            keys = self._scripts.list_values(
                keys=[self._values_index], args=[low, low + b"\xff", self._prefix + "v:"]
            )
        return [str(k) for k in keys]

    def close(self) -> None:
        """Close the connection pools (the async ones on their own event loops)."""
        self._client.close()
        sides = list(self._async.items())
        self._async.clear()
        for loop, side in sides:
            side.close_on(loop)

    async def areserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Async twin of ``reserve``."""
        keys, args = self._reserve_call(reservation_id, charges, now, lease_until, watch, settle)
        async with self._afaults():
            reply = await self._side().scripts.reserve(keys=keys, args=args)
        return _reserve_outcome(reply, charges)

    async def acommit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``commit``."""
        keys, args = self._commit_call(reservation_id, charges, now)
        async with self._afaults():
            reply = await self._side().scripts.commit(keys=keys, args=args)
        return _commit_states(reply, charges)

    async def asettle(
        self, settlements: Sequence[Settlement], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``settle``."""
        if not settlements:
            return ()
        keys, args = self._settle_call(settlements, now)
        async with self._afaults():
            reply = await self._side().scripts.settle(keys=keys, args=args)
        return _settled_states(reply, settlements)

    async def arelease(self, reservation_id: str, *, now: float) -> None:
        """Async twin of ``release``."""
        async with self._afaults():
            await self._side().scripts.release(
                keys=[self._record(reservation_id)], args=[reservation_id]
            )

    async def acancelled(self, targets: Sequence[str]) -> str | None:
        """Async twin of ``cancelled``."""
        if not targets:
            return None
        async with self._afaults():
            found = await self._side().client.hmget(self._cancels, list(targets))
        return next((t for t, hit in zip(targets, found, strict=True) if hit is not None), None)

    async def aclose(self) -> None:
        """Close this event loop's async pool (and the sync pool)."""
        side = self._async.pop(asyncio.get_running_loop(), None)
        if side is not None:
            await side.client.aclose()
        self.close()

    # ------------------------------------------------------------------ keys and arguments
    @property
    def _cancels(self) -> str:
        return self._prefix + "cancels"

    @property
    def _values_index(self) -> str:
        return self._prefix + "values"

    def _record(self, reservation_id: str) -> str:
        return self._prefix + "r:" + reservation_id

    def _bucket_keys(self, key: str) -> list[str]:
        return [self._prefix + "b:" + key, self._prefix + "h:" + key]

    def _reserve_call(
        self,
        rid: str,
        charges: Sequence[Charge],
        now: float,
        lease_until: float,
        watch: Sequence[str],
        settle: Sequence[Settlement] = (),
    ) -> tuple[list[str], list[str]]:
        keys = [self._cancels, self._record(rid)]
        args = [rid, _num(now), _num(lease_until), str(_ttl_ms(lease_until, now))]
        args += [str(len(charges)), str(len(watch)), *watch]
        for charge in charges:
            keys += self._bucket_keys(charge.key)
            args += [
                _num(charge.amount),
                _num(charge.limit),
                _num(charge.expires_at),
                str(_ttl_ms(charge.expires_at, now)),
            ]
        if settle:
            self._add_settlements(keys, args, settle, now)
        return keys, args

    def _settle_call(
        self, settlements: Sequence[Settlement], now: float
    ) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        args: list[str] = []
        self._add_settlements(keys, args, settlements, now)
        return keys, args

    def _add_settlements(
        self, keys: list[str], args: list[str], settlements: Sequence[Settlement], now: float
    ) -> None:
        """The keys and arguments of the scripts' ``settle`` part."""
        args += [str(int(COMMIT_MEMORY_SECONDS * 1000)), str(len(settlements))]
        prefix = self._prefix
        for rid, charges in settlements:
            keys += [prefix + "r:" + rid, prefix + "d:" + rid]
            args += [rid, str(len(charges))]
            for charge in charges:
                keys.append(prefix + "b:" + charge.key)
                args += [_num(charge.amount), _num(charge.expires_at)]
                args.append(str(_ttl_ms(charge.expires_at, now)))

    def _commit_call(
        self, rid: str, charges: Sequence[Charge], now: float
    ) -> tuple[list[str], list[str]]:
        keys = [self._record(rid), self._prefix + "d:" + rid]
        args = [rid, _num(now), str(int(COMMIT_MEMORY_SECONDS * 1000))]
        for charge in charges:
            keys += self._bucket_keys(charge.key)
            args += [
                _num(charge.amount),
                _num(charge.expires_at),
                str(_ttl_ms(charge.expires_at, now)),
            ]
        return keys, args

    # ------------------------------------------------------------------ I/O edges
    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn redis errors into ``LedgerUnavailable`` (the warden's fault policy decides)."""
        try:
            yield
        except _FAULTS as exc:
            raise LedgerUnavailable(self.uri, exc) from exc

    @asynccontextmanager
    async def _afaults(self) -> AsyncIterator[None]:
        try:
            yield
        except _FAULTS as exc:
            raise LedgerUnavailable(self.uri, exc) from exc

    def _side(self) -> _AsyncSide:
        """This event loop's async client and scripts (a pool cannot cross event loops)."""
        loop = asyncio.get_running_loop()
        side = self._async.get(loop)
        if side is None:
            side = self._async[loop] = _AsyncSide.open(self._options)
        return side


@dataclass(slots=True)
class _AsyncSide:
    """An async client bound to one event loop, with the scripts registered on it."""

    client: Any
    scripts: _Scripts

    @classmethod
    def open(cls, options: _Options) -> _AsyncSide:
        """A client whose pool makes a call wait for a free connection (as long as for a
        reply) when ``max_connections`` (100) are busy: redis-py's default pool raises "Too
        many connections" instead, which would read as an outage under concurrency."""
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            options.url,
            max_connections=ASYNC_MAX_CONNECTIONS,  # a ?max_connections= in the URI wins
            timeout=options.timeout,
            decode_responses=True,
            socket_timeout=options.timeout,
            socket_connect_timeout=options.connect_timeout,
            retry=AsyncRetry(NoBackoff(), 1, (RedisConnectionError,)),
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # aclose() closes the pool, as from_url's
        return cls(client, _register(client))

    def close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the pool on its own loop while that loop runs; else let it go with the loop."""
        if loop.is_closed() or not loop.is_running():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self.client.aclose())
        else:
            asyncio.run_coroutine_threadsafe(self.client.aclose(), loop)


def _reserve_outcome(reply: list[str], charges: Sequence[Charge]) -> ReserveOutcome:
    """A ReserveOutcome from the reserve script's reply."""
    if reply[0] == "cancelled":
        return ReserveOutcome(ok=False, cancelled=reply[1])
    if reply[0] == "refused":
        charge = charges[int(reply[1]) - 1]
        state = BucketState(charge.key, float(reply[2]), float(reply[3]), charge.limit)
        return ReserveOutcome.refusal(state, charge.amount)
    before = [
        BucketState(c.key, float(reply[1 + 2 * i]), float(reply[2 + 2 * i]), c.limit)
        for i, c in enumerate(charges)
    ]
    return ReserveOutcome.granted(before, charges)


def _settled_states(reply: Any, settlements: Sequence[Settlement]) -> tuple[BucketState, ...]:
    """The settle script's reply (committed spend per charge, in order) as bucket states."""
    charges = [charge for _, charges in settlements for charge in charges]
    states = [
        BucketState(charge.key, float(value), 0.0, charge.limit)
        for charge, value in zip(charges, reply, strict=True)
    ]
    return latest_states(states)


def _commit_states(reply: list[str], charges: Sequence[Charge]) -> tuple[BucketState, ...]:
    """Bucket states from the commit script's reply."""
    return tuple(
        BucketState(c.key, float(reply[2 * i]), float(reply[2 * i + 1]), c.limit)
        for i, c in enumerate(charges)
    )
