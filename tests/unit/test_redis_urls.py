"""REDIS_URL's three forms (one server, Cluster, Sentinel), and the clear errors of bad ones."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from runequeue import QueueConfig
from runequeue.drivers.redis_connect import async_client, parse, sync_client
from runequeue.drivers.redis_errors import redacted
from runequeue.drivers.redis_keys import KeyCache
from runequeue.errors import ConfigError


def test_a_plain_url_is_one_server_and_left_to_redis_py() -> None:
    target = parse("rediss://:pw@cache:6380/2?ssl_cert_reqs=required")
    assert (target.topology, target.nodes, target.options) == ("server", (), {})


def test_a_cluster_url_names_its_seed_nodes_and_credentials() -> None:
    target = parse("rediss+cluster://app:s3cret@h1:7000,h2:7001?ssl_ca_certs=/ca.pem")
    assert target.topology == "cluster"
    assert target.nodes == (("h1", 7000), ("h2", 7001))
    assert target.options == {
        "username": "app", "password": "s3cret", "ssl": True, "ssl_ca_certs": "/ca.pem",
    }  # fmt: skip
    assert "s3cret" not in str(target) and "s3cret" not in redacted(target.url)


def test_a_sentinel_url_names_the_master_the_database_and_the_sentinels_own_password() -> None:
    target = parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3?sentinel_password=sp")
    assert target.topology == "sentinel"
    assert (target.nodes, target.service) == ((("s1", 26379), ("s2", 26380)), "mymaster")
    assert target.options == {"password": "pw", "db": 3}
    assert target.sentinel_options == {"password": "sp"}
    assert parse("redis+sentinel://s1:26379/mymaster").options == {"db": 0}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://cache:6379", "it must be redis://"),
        ("redis+swarm://h:1", "it must be redis://"),
        ("redis+cluster://h1", "is not host:port"),
        ("redis+cluster://h1:7000/2", "database 0 only"),
        ("redis+sentinel://s1:26379", "name the master"),
        ("unix+cluster://x:1", "not a unix socket"),
    ],
)
def test_a_bad_url_is_refused_with_what_to_write(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse(url)
    with pytest.raises(ConfigError, match=words):
        QueueConfig(driver="redis", redis_url=url)


def test_each_form_gets_its_own_redis_py_client() -> None:
    # (redis-py's blocking Cluster client connects as it is made: proved on a real Cluster)
    assert isinstance(async_client(parse("redis+cluster://127.0.0.1:1")), aiocluster.RedisCluster)
    master = async_client(parse("redis+sentinel://127.0.0.1:1/mymaster/0"))
    assert isinstance(master, redis.asyncio.Redis)
    assert isinstance(master.connection_pool, aiosentinel.SentinelConnectionPool)
    blocking = sync_client(parse("redis+sentinel://127.0.0.1:1/mymaster/0"))
    assert isinstance(blocking, redis.Redis)
    assert isinstance(blocking.connection_pool, redis.sentinel.SentinelConnectionPool)


def test_a_queue_name_with_a_brace_is_refused_as_it_would_break_its_hash_tag() -> None:
    keys = KeyCache("queues")
    assert keys("emails").ready == "queues:{emails}"
    with pytest.raises(ConfigError, match="has a brace"):
        keys("a}b")
    with pytest.raises(ConfigError, match="has a brace"):
        KeyCache("app{1}", cluster=True)
