"""What is particular to the Redis ledger: one hash tag, keys that expire, scripts, URIs."""

from __future__ import annotations

import math
import re
import socket
import time
import uuid

import pytest

from budgetwarden.errors import LedgerUnavailable
from budgetwarden.ledger import Charge, open_ledger
from budgetwarden.ledger.redis import RedisLedger

from .conftest import RedisServer

NOW = 1_000_000.0


@pytest.fixture
def namespace() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def ledger(redis_server: RedisServer, namespace: str) -> RedisLedger:
    opened = RedisLedger(redis_server.url(namespace=namespace))
    yield opened
    opened.close()


def test_every_key_shares_one_hash_tag(
    ledger: RedisLedger, redis_server: RedisServer, namespace: str
) -> None:
    charges = [Charge("a|user=u1|0", 1.0, 5.0, NOW + 3600), Charge("{x}", 1.0, 5.0, math.inf)]
    ledger.reserve("r1", charges, now=NOW, lease_until=NOW + 300, watch=["run=r1"])
    ledger.mark_once("alert|a|0.5", expires_at=NOW + 3600)
    ledger.cancel("user=u2")
    keys = list(redis_server.client().scan_iter(f"*{namespace}*"))
    assert len(keys) == 7  # 2 buckets, 2 holds hashes, 1 reservation, 1 mark, cancels
    assert all(key.startswith(f"{{bw:{namespace}}}:") for key in keys)


def test_buckets_expire_with_their_window_and_holds_with_their_lease(
    ledger: RedisLedger, redis_server: RedisServer, namespace: str
) -> None:
    client = redis_server.client()
    tag = f"{{bw:{namespace}}}:"
    charges = [Charge("hour", 1.0, 5.0, NOW + 3600), Charge("total", 1.0, 5.0, math.inf)]
    ledger.reserve("r1", charges, now=NOW, lease_until=NOW + 30)
    margin = 600_000
    assert 3_600_000 + margin - 5_000 < client.pttl(tag + "b:hour") <= 3_600_000 + margin
    assert client.pttl(tag + "b:total") == -1  # a window that never ends
    assert 30_000 + margin - 5_000 < client.pttl(tag + "h:hour") <= 30_000 + margin
    assert 30_000 + margin - 5_000 < client.pttl(tag + "r:r1") <= 30_000 + margin
    ledger.commit("r1", charges, now=NOW + 1)
    assert client.exists(tag + "r:r1", tag + "h:hour", tag + "h:total") == 0  # nothing left over


def test_a_hold_whose_lease_passed_is_deleted_by_the_next_script(
    ledger: RedisLedger, redis_server: RedisServer, namespace: str
) -> None:
    ledger.reserve("old", [Charge("k", 1.0, 5.0, math.inf)], now=NOW, lease_until=NOW + 10)
    ledger.reserve("new", [Charge("k", 1.0, 5.0, math.inf)], now=NOW + 11, lease_until=NOW + 99)
    holds = redis_server.client().hkeys(f"{{bw:{namespace}}}:h:k")
    assert holds == ["new"]


def test_scripts_are_loaded_again_after_the_server_forgot_them(
    ledger: RedisLedger, redis_server: RedisServer
) -> None:
    charge = Charge("k", 1.0, 5.0, math.inf)
    ledger.commit("r1", [charge], now=NOW)
    redis_server.client().script_flush()  # as after a restart or a failover
    assert ledger.commit("r2", [charge], now=NOW)[0].committed == 2.0


def test_namespaces_keep_ledgers_apart(redis_server: RedisServer) -> None:
    first = RedisLedger(redis_server.url(namespace="team a"))
    second = RedisLedger(redis_server.url(namespace="team-b"))
    first.commit("r", [Charge("k", 1.0, 5.0, math.inf)], now=NOW)
    assert second.state("k", now=NOW).committed == 0.0
    assert first.state("k", now=NOW).committed == 1.0


def test_uri_options_set_namespace_and_timeouts() -> None:
    ledger = RedisLedger("redis://127.0.0.1:6379/2?namespace=prod&timeout=0.3&connect_timeout=0.1")
    kwargs = ledger._client.connection_pool.connection_kwargs
    assert (ledger.namespace, kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (
        "prod",
        0.3,
        0.1,
    )
    assert kwargs["db"] == 2
    assert "namespace" not in kwargs


def test_default_timeouts_are_short() -> None:
    kwargs = RedisLedger("redis://127.0.0.1:6379/0")._client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.0 and kwargs["socket_connect_timeout"] == 0.5


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("redis://127.0.0.1:6379/0?timout=0.5", "unknown option 'timout'"),
        ("redis://127.0.0.1:6379/0?decode_responses=false", "unknown option 'decode_responses'"),
        ("redis://127.0.0.1:6379/0?ssl_ciphers=HIGH", "unknown option 'ssl_ciphers'"),
        ("unix:///tmp/redis.sock?socket_keepalive=true", "unknown option 'socket_keepalive'"),
        ("redis://127.0.0.1:6379/0?retry_on_error=x", "unknown option 'retry_on_error'"),
        ("redis://127.0.0.1:6399/x", "'/x' is not a database number"),
        ("redis://127.0.0.1:6399/1/2", "'/1/2' is not a database number"),
        ("redis://127.0.0.1:6379/0?timeout=abc", "option timeout='abc'"),
        ("redis://127.0.0.1:6379/0?connect_timeout=-1", "option connect_timeout='-1'"),
        ("redis://127.0.0.1:6379/0?timeout=nan", "option timeout='nan'"),
    ],
)
def test_uris_redis_py_would_choke_on_later_are_refused_when_the_ledger_is_made(
    uri: str, said: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        open_ledger(uri)


def test_an_unknown_option_is_named_with_the_ones_that_are_valid() -> None:
    with pytest.raises(ValueError) as info:
        RedisLedger("redis://:pw@127.0.0.1:6379/0?password=secret&timout=0.5")
    message = str(info.value)
    assert "did you mean 'timeout'?" in message
    for valid in ("namespace", "connect_timeout", "socket_keepalive", "client_name", "db"):
        assert valid in message
    assert "secret" not in message and ":pw@" not in message  # passwords stay masked


def test_database_paths_and_options_redis_py_takes_are_accepted() -> None:
    for path, db in (("", None), ("/", None), ("/12", 12), ("/3/", 3)):
        pool = RedisLedger(f"redis://127.0.0.1:6379{path}")._client.connection_pool
        assert pool.connection_kwargs.get("db") == db
    tls = RedisLedger("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none&ssl_ciphers=HIGH")
    assert tls._client.connection_pool.connection_kwargs["ssl_ciphers"] == "HIGH"


def test_making_the_ledger_does_not_connect() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = RedisLedger(f"redis://127.0.0.1:{port}/0?connect_timeout=0.2")
    with pytest.raises(LedgerUnavailable):
        ledger.state("k", now=NOW)


async def test_redis_py_options_given_in_the_uri_work_on_both_clients(
    redis_server: RedisServer,
) -> None:
    uri = redis_server.url(
        client_name="bw-test", health_check_interval="5", socket_keepalive="true",
        max_connections="4", retry_on_timeout="true", encoding="utf-8",
    )  # fmt: skip
    ledger = RedisLedger(uri)
    charge = Charge("k", 1.0, 5.0, math.inf)
    ledger.commit("r1", [charge], now=NOW)
    assert (await ledger.acommit("r2", [charge], now=NOW))[0].committed == 2.0
    assert ledger.state("k", now=NOW).committed == 2.0
    ledger.close()


def test_a_commit_retried_after_a_timeout_is_counted_once(own_redis: RedisServer) -> None:
    ledger = open_ledger(own_redis.url(timeout="0.2", connect_timeout="0.2"))
    now = time.time()
    charge = Charge("k", 1.0, 10.0, now + 3600)
    ledger.commit("rid-0", [charge], now=now)  # connected, script loaded
    own_redis.freeze()  # the reply never comes, but Redis runs the script once thawed
    with pytest.raises(LedgerUnavailable):
        ledger.commit("rid-1", [charge], now=now)
    own_redis.thaw()
    time.sleep(0.3)
    ledger.commit("rid-1", [charge], now=now)  # the caller's retry (or a fail-open replay)
    assert ledger.state("k", now=now).committed == 2.0  # rid-0 and rid-1, each once


def test_more_concurrent_async_calls_than_connections_wait_for_one(
    redis_server: RedisServer, namespace: str
) -> None:
    """200 runs awaiting the ledger at once on one event loop: past the pool's 100
    connections a call waits for a free one. redis-py's default pool raised "Too many
    connections", which read as an outage and refused every call."""
    import asyncio

    from budgetwarden import Budget, ListSink, Notice, Usage, Warden

    from .helpers import MODEL, policy

    class OneTripPerCall(Warden):
        pool_calls = 0  # no pools: every call goes to Redis

    sink = ListSink()
    budget = Budget(scope="workspace", window="day", max_cost_usd=100.0)
    uri = redis_server.url(namespace=namespace)
    warden = OneTripPerCall(policy(budget), ledger=uri, sinks=[sink], log_events=False)

    async def one_call() -> float:
        run = warden.run(workspace="acme")
        step = await run.abefore_llm_call(MODEL, input_tokens=100, max_tokens=100)
        await asyncio.sleep(0.01)  # the model answers while the others reserve
        usage = Usage(input_tokens=100, output_tokens=50)
        cost = (await run.aafter_llm_call(step, usage)).cost_usd
        await run.afinish()
        return cost

    async def many() -> list[float]:
        return await asyncio.gather(*(one_call() for _ in range(200)))

    costs = asyncio.run(many())
    assert [n.code for n in sink.of_type(Notice)] == []
    assert warden.spent("workspace", "acme") == pytest.approx(sum(costs))
    warden.close()
