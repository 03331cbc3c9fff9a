"""RedisBackend beyond the contract: scripts, data loss, hostile data, errors, key layout.

Every test runs against a real ``redis-server`` (see ``tests/redis_server.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyscheduler.backends import redis_backend_from_config
from pyscheduler.backends.base import (
    ClaimRequest,
    DueEntry,
    InstanceInfo,
    JobDefinition,
    Lease,
    Outcome,
)
from pyscheduler.backends.redis import RedisBackend
from pyscheduler.config import SchedulerConfig
from pyscheduler.errors import BackendUnavailableError, ConfigError
from tests.redis_server import free_port

pytestmark = pytest.mark.redis

PREFIX = "pfx"
LONG = 60_000
HOUR = 3_600_000
JOB_KEY = "{pfx}:job:job"
LEASE_KEY = "{pfx}:lease:job"


@pytest.fixture
def client(redis_server):
    """A client of the test's own, decoding replies, to look at and tamper with the keys."""
    client = redis_server.client(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def backend(redis_server):
    client = redis_server.client()
    backend = RedisBackend(client, PREFIX)
    backend.open()
    yield backend
    backend.close()
    client.close()


def register_due(backend, *names: str):
    now = backend.now_ms()
    return backend.register([JobDefinition(name, now - 1_000, {"n": name}) for name in names])


def request(state, owner: str = "owner-1") -> ClaimRequest:
    return ClaimRequest(state.name, owner, state.due_ms, state.next_run_ms, state.next_run_ms,
                        state.next_run_ms + HOUR)


def lease(claimed) -> Lease:
    return Lease(claimed.job_name, claimed.owner, claimed.fence)


def script_calls(client) -> tuple[int, int, int]:
    """How often EVALSHA, EVAL and SCRIPT LOAD were called."""
    stats = client.info("commandstats")
    return tuple(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                 for name in ("evalsha", "eval", "script|load"))


# -- scripts and data loss --------------------------------------------------------------------


def test_scripts_are_reloaded_after_script_flush(backend, client):
    # Given scripts loaded at open, then flushed from the server's cache
    (state,) = register_due(backend, "job")
    client.script_flush()
    # When the backend claims and refreshes (through its second client)
    (claimed,) = backend.claim("i", [request(state)], LONG, 0).claims
    client.script_flush()
    # Then redis-py's Script re-loads them on NOSCRIPT
    assert backend.refresh([lease(claimed)], LONG) == [True]


def test_after_a_restart_jobs_read_as_missing_and_are_recreated(backend, redis_server):
    # Given a job claimed before Redis restarts without persistence
    (state,) = register_due(backend, "job")
    (before,) = backend.claim("i", [request(state)], LONG, 0).claims
    redis_server.restart()
    # Then the job is missing, not removed, and its lease is lost
    batch = backend.claim("i", [request(state, "owner-2")], LONG, 0)
    assert batch.refused == [DueEntry("job", None, None, missing=True, removed=False)]
    assert backend.refresh([lease(before)], LONG) == [False]
    assert backend.finish([Outcome(lease(before), True)]) == [None]
    # And re-registered, it is claimed under a fence above every earlier one
    (state,) = register_due(backend, "job")
    (after,) = backend.claim("i", [request(state, "owner-3")], LONG, 0).claims
    assert after.fence > before.fence


# -- hostile or corrupt data ------------------------------------------------------------------

CORRUPTIONS = {
    "job key holds a string": lambda c: (c.delete(JOB_KEY), c.set(JOB_KEY, "junk")),
    "job key holds a list": lambda c: (c.delete(JOB_KEY), c.rpush(JOB_KEY, "junk")),
    "junk fence": lambda c: c.hset(JOB_KEY, "fence", "not-a-number"),
    # Past 2^53 a Lua number is not exact: fence + 1 == fence, and the fence stops rising.
    "fence above 2^53": lambda c: c.hset(JOB_KEY, "fence", "99999999999999990"),
    "counter below -2^53": lambda c: c.hset(JOB_KEY, "run_count", "-9007199254740993"),
    "junk status": lambda c: c.hset(JOB_KEY, "status", "exploded"),
    "junk description": lambda c: c.hset(JOB_KEY, "def", "{not json"),
    "missing field": lambda c: c.hdel(JOB_KEY, "run_count"),
    "junk lease": lambda c: c.set(LEASE_KEY, "junk", px=LONG),
    "lease without TTL": lambda c: c.set(LEASE_KEY, c.get(LEASE_KEY)),
    "lease holds a hash": lambda c: (c.delete(LEASE_KEY), c.hset(LEASE_KEY, "a", "b")),
}

OPERATIONS = {
    # A claim for the occurrence each job is at now (its lease's expiry), so that it reads
    # the job whole: a claim for one it moved past is refused from its due fields alone.
    "claim": lambda b, states, held: [
        (e.missing, e.removed) for e in b.claim(
            "i", [ClaimRequest(c.job_name, "again", c.claimed_at_ms + c.lease_ms, None, None,
                               None) for c in held], LONG, 0).refused],
    "refresh": lambda b, states, held: b.refresh([lease(c) for c in held], LONG),
    "finish": lambda b, states, held: [
        s is not None for s in b.finish([Outcome(lease(c), True) for c in held])],
    "interrupt": lambda b, states, held: b.interrupt([lease(c) for c in held]),
    "get_states": lambda b, states, held: [
        s is not None for s in b.get_states([s.name for s in states])],
    "run_now": lambda b, states, held: [not b.run_now("job").missing],
}

EXPECTED = {
    "claim": [(True, False)],  # "job" refused as missing (the healthy one is running: refused)
    "refresh": [False, True],
    "finish": [False, True],
    "interrupt": [False, True],
    "get_states": [False, True],
    "run_now": [False],
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_job_is_reset_and_reported_missing(backend, client, caplog, corruption,
                                                      operation):
    # Given a running job whose stored values someone damaged, next to a healthy job
    states = register_due(backend, "job", "healthy")
    held = backend.claim("i", [request(s) for s in states], LONG, 0).claims
    CORRUPTIONS[corruption](client)
    # When any operation reads it
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        result = OPERATIONS[operation](backend, states, held)
    # Then it raises nothing, the healthy job is served, and the damaged job is reset
    if operation == "claim":
        assert result[0] == EXPECTED["claim"][0] and result[1] == (False, False)
    else:
        assert result == EXPECTED[operation]
    assert any(r.levelno == logging.ERROR and "'job'" in r.getMessage()
               for r in caplog.records), caplog.text
    assert client.exists(JOB_KEY, LEASE_KEY) == 0
    assert client.zscore("{pfx}:due", "job") is None
    assert client.smembers("{pfx}:jobs") == {"healthy"}
    # And it reads as missing (not removed), so its schedulers re-create it
    (retry,) = backend.claim("i", [request(states[0], "later")], LONG, 0).refused
    assert retry == DueEntry("job", None, None, missing=True, removed=False)
    (state,) = register_due(backend, "job")
    (claimed,) = backend.claim("i", [request(state, "fresh")], LONG, 0).claims
    assert claimed.fence > held[0].fence


def test_a_corrupt_job_found_by_peek_is_reported_missing(backend, client, caplog):
    register_due(backend, "job", "other")
    client.hset(JOB_KEY, "paused", "maybe")
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        batch = backend.claim("i", [], LONG, 5)
    assert DueEntry("job", None, None, missing=True, removed=False) in batch.due
    assert "'job'" in caplog.text
    assert client.exists(JOB_KEY) == 0


def test_a_lease_without_ttl_does_not_block_claims(backend, client):
    # Given a job whose lease lost its TTL to a plain SET after its holder died
    (state,) = register_due(backend, "job")
    (held,) = backend.claim("i", [request(state)], 50, 0).claims
    client.set(LEASE_KEY, f"{held.owner}|{held.fence}")
    # Then the job is not stuck behind it: it reads as missing and is re-created
    (stored,) = backend.get_states(["job"])
    assert stored is None and client.exists(LEASE_KEY) == 0
    (state,) = register_due(backend, "job")
    assert len(backend.claim("i", [request(state, "next")], LONG, 0).claims) == 1


def test_a_register_over_a_corrupt_job_recreates_it(backend, client, caplog):
    register_due(backend, "job")
    client.hset(JOB_KEY, "attempt", "x")
    client.hset(JOB_KEY, "owner", "someone")
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        (state,) = register_due(backend, "job")
    assert state.fence == 0 and state.run_count == 0 and state.description == {"n": "job"}
    assert "'job'" in caplog.text


# -- errors at the boundary -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://:wrong@127.0.0.1:{port}/0",
                                 "redis://127.0.0.1:{port}/0"])
def test_a_wrong_password_fails_open_clearly(redis_server_factory, url):
    server = redis_server_factory(password="secret")
    backend = RedisBackend.from_url(url.format(port=server.port))
    with pytest.raises(BackendUnavailableError) as raised:
        backend.open()
    message = str(raised.value)
    assert f"redis://127.0.0.1:{server.port}/0" in message
    assert "authentication failed" in message
    assert "secret" not in message and ":wrong@" not in message
    backend.close()
    good = RedisBackend.from_url(server.url)
    good.open()
    good.close()


def test_an_unreachable_server_fails_naming_its_address():
    port = free_port()
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0),
                         socket_connect_timeout=1)
    backend = RedisBackend(client, PREFIX)
    address = f"redis://127.0.0.1:{port}/0"
    assert backend.address == address
    for call in (backend.open, backend.now_ms, lambda: backend.claim("i", [], LONG, 1)):
        with pytest.raises(BackendUnavailableError, match=address):
            call()
    backend.close()
    client.close()


def test_an_evicting_server_is_warned_about_at_open(redis_server_factory, caplog):
    server = redis_server_factory("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    backend = RedisBackend.from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="pyscheduler.redis"):
        backend.open()
    backend.close()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "allkeys-lru" in record.getMessage() and "noeviction" in record.getMessage()


def test_a_safe_server_is_not_warned_about(redis_server, caplog):
    with caplog.at_level(logging.WARNING, logger="pyscheduler.redis"):
        backend = RedisBackend.from_url(redis_server.url)
        backend.open()
        backend.close()
    assert caplog.records == []


def test_an_acl_user_without_config_gets_one_info_line(redis_server_factory, caplog):
    # Given an ACL user, in the URL, who may not run CONFIG (as on managed Redis)
    server = redis_server_factory("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    admin = server.client()
    admin.acl_setuser("app", enabled=True, passwords=["+apppw"], keys=["*"],
                      commands=["+@all", "-config"])
    admin.close()
    backend = RedisBackend.from_url(f"redis://app:apppw@127.0.0.1:{server.port}/0", "acl")
    # When it opens: no warning and no error, one line saying the check could not be made
    with caplog.at_level(logging.DEBUG, logger="pyscheduler.redis"):
        backend.open()
    (record,) = caplog.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "could not check the maxmemory-policy" in record.getMessage()
    assert f"127.0.0.1:{server.port}" in record.getMessage()
    # And it works
    (state,) = register_due(backend, "job")
    assert len(backend.claim("i", [request(state)], LONG, 0).claims) == 1
    backend.close()


# -- what is stored, and how it is reached ----------------------------------------------------


def test_every_key_carries_the_hash_tag(backend, client):
    (a, _) = register_due(backend, "a", "b")
    backend.claim("i", [request(a)], LONG, 0)
    backend.remove("b")
    keys = set(client.keys("*"))
    assert keys == {"{pfx}:job:a", "{pfx}:lease:a", "{pfx}:due", "{pfx}:jobs", "{pfx}:removed",
                    "{pfx}:epochs", "{pfx}:layout"}
    assert all(key.startswith("{pfx}:") for key in keys)


def test_stored_values_are_plain_text_and_json(backend, redis_server):
    (state,) = register_due(backend, "job")
    (claimed,) = backend.claim("i", [request(state)], LONG, 0).claims
    raw = redis_server.client()  # bytes, as stored
    fields = raw.hgetall(JOB_KEY.encode())
    values = {k.decode(): v.decode("utf-8") for k, v in fields.items()}  # all text
    assert not any(v.startswith(b"\x80") for v in fields.values())  # no pickle
    assert json.loads(values["def"]) == {"n": "job"}
    assert values["fence"] == str(claimed.fence) and values["status"] == "running"
    assert raw.get(LEASE_KEY) == f"{claimed.owner}|{claimed.fence}".encode()
    assert 0 < raw.pttl(LEASE_KEY) <= LONG
    # A refresh sets the TTL, never adds to it
    assert backend.refresh([lease(claimed)], 5_000) == [True]
    assert 0 < raw.pttl(LEASE_KEY) <= 5_000
    raw.close()


def test_a_decoding_client_works_too(redis_server):
    client = redis_server.client(decode_responses=True)
    backend = RedisBackend(client, "decoded")
    backend.open()
    (state,) = register_due(backend, "jöb")
    (claimed,) = backend.claim("i", [request(state)], LONG, 0).claims
    (after,) = backend.finish([Outcome(lease(claimed), False, "ünïcode", 0.1)])
    assert after.last_error == "ünïcode" and backend.job_names() == ["jöb"]
    backend.close()
    client.close()


def _connections(admin, name: str) -> int:
    return sum(1 for c in admin.client_list() if c["name"] == name)


def _wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_close_closes_only_the_clients_the_backend_built(redis_server, client):
    # Given a backend that built its client and one given a client
    owned = RedisBackend.from_url(redis_server.url, client_name="owned")
    given_client = redis_server.client(client_name="given")
    given = RedisBackend(given_client, "given")
    for backend in (owned, given):
        backend.open()
        (state,) = register_due(backend, "job")
        (claimed,) = backend.claim("i", [request(state)], LONG, 0).claims
        assert backend.refresh([lease(claimed)], LONG) == [True]  # the refresher's client
    assert _connections(client, "owned") == 2 and _connections(client, "given") == 2
    # When both close
    owned.close()
    given.close()
    # Then the owned client is closed; of the given one only the refresher's connection
    assert _wait_for(lambda: _connections(client, "owned") == 0)
    assert _wait_for(lambda: _connections(client, "given") == 1)
    assert given_client.ping()
    given_client.close()


def test_refresh_goes_through_a_bounded_client_of_its_own(backend):
    refresher = backend._refresh_client
    kwargs = refresher.connection_pool.connection_kwargs
    assert refresher is not backend._client
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 2.0
    assert kwargs["retry"].get_retries() == 1


def test_a_batch_of_claims_is_one_round_trip(backend, client):
    states = register_due(backend, *(f"job-{i}" for i in range(10)))
    evalsha, evals, loads = script_calls(client)
    batch = backend.claim("i", [request(s) for s in states], LONG, 10)
    assert len(batch.claims) == 10
    assert script_calls(client) == (evalsha + 1, evals, loads)
    assert backend.refresh([lease(c) for c in batch.claims], LONG) == [True] * 10
    assert None not in backend.finish([Outcome(lease(c), True) for c in batch.claims])
    assert script_calls(client) == (evalsha + 3, evals, loads)


# -- construction -----------------------------------------------------------------------------


def test_config_with_a_url(redis_server, client):
    config = SchedulerConfig(backend_type="redis", redis_url=redis_server.url, key_prefix="cfg")
    backend = redis_backend_from_config(config)
    assert isinstance(backend, RedisBackend)
    backend.open()
    register_due(backend, "job")
    backend.close()
    assert client.sismember("{cfg}:jobs", "job")


def test_config_with_an_address(redis_server):
    config = SchedulerConfig(backend_type="redis", redis_addr=f"127.0.0.1:{redis_server.port}",
                             redis_db=3, key_prefix="cfg")
    backend = redis_backend_from_config(config)
    assert backend.address == f"redis://127.0.0.1:{redis_server.port}/3"
    backend.open()
    register_due(backend, "job")
    backend.close()
    db3 = redis_server.client(db=3, decode_responses=True)
    assert db3.smembers("{cfg}:jobs") == {"job"}
    db3.close()


def test_from_address_rejects_a_malformed_address():
    with pytest.raises(ConfigError, match="redis_addr"):
        RedisBackend.from_address("localhost")


@pytest.mark.parametrize("url, address", [
    ("redis://user:secret@example.com:6380/2", "redis://example.com:6380/2"),
    ("rediss://example.com/1", "rediss://example.com:6379/1"),
    ("unix:///tmp/redis.sock?db=4", "unix:///tmp/redis.sock?db=4"),
])
def test_the_address_names_the_server_without_credentials(url, address):
    backend = RedisBackend.from_url(url)  # nothing connects until used
    assert backend.address == address and address in repr(backend)
    backend.close()


def test_an_empty_key_prefix_is_rejected(redis_server):
    client = redis_server.client()
    with pytest.raises(ValueError, match="key_prefix"):
        RedisBackend(client, "")
    client.close()


@pytest.mark.parametrize("name", ["job", "jöb ☃ \"quoted\" \\ back/slash", "x" * 200])
def test_names_and_errors_of_any_text_go_through_the_json_arguments(backend, name):
    # Given a claimed job whose name holds quotes, backslashes and non-ASCII text
    (state,) = register_due(backend, name)
    batch = backend.claim("i1", [request(state)], LONG, 0)
    (claimed,) = batch.claims
    assert claimed.job_name == name

    # When it fails with a message holding a lone surrogate (not encodable as UTF-8)
    (after,) = backend.finish([Outcome(lease(claimed), False, "ValueError: bad \ud800 byte",
                                       0.25)])

    # Then the outcome is recorded, the surrogate escaped rather than failing the call
    assert after is not None and after.run_count == 1 and after.last_failed
    assert after.last_error == "ValueError: bad \\ud800 byte"
    assert after.last_duration == 0.25
    (read,) = backend.get_states([name])
    assert read.description == {"n": name}
    assert dataclasses.replace(read, description={}) == after


def test_a_claim_for_an_occurrence_taken_elsewhere_is_refused_from_the_index_alone(
        backend, client, caplog):
    # Given a job another instance claimed, and damage in a field the due index does not hold
    (state,) = register_due(backend, "job")
    (held,) = backend.claim("a", [request(state, "owner-a")], LONG, 0).claims
    client.hset(JOB_KEY, "status", "exploded")

    # When a second instance asks for the occurrence it saw due
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        (refused,) = backend.claim("b", [request(state, "owner-b")], LONG, 0).refused

    # Then it is refused with the job's current due time and next run, read from the index
    # fields without loading (nor judging) the rest of the job
    assert refused == DueEntry("job", held.claimed_at_ms + LONG,
                               state.next_run_ms + HOUR)
    assert client.exists(JOB_KEY) == 1 and "'job'" not in caplog.text
    # And the next operation that reads the job whole resets it
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        assert backend.get_states(["job"]) == [None]
    assert "'job'" in caplog.text and client.exists(JOB_KEY) == 0


def test_finish_and_claim_is_one_round_trip(backend, client):
    states = register_due(backend, *(f"job-{i}" for i in range(10)))
    held = backend.claim("i", [request(s) for s in states[:5]], LONG, 0).claims
    evalsha, evals, loads = script_calls(client)
    finished, batch = backend.finish_and_claim([Outcome(lease(c), True) for c in held], "i",
                                               [request(s) for s in states[5:]], LONG, 0)
    assert None not in finished and len(batch.claims) == 5
    assert script_calls(client) == (evalsha + 1, evals, loads)


# -- live instances ---------------------------------------------------------------------------

INSTANCES_KEY = "{pfx}:instances"
EPOCHS_KEY = "{pfx}:epochs"


def info(instance_id: str = "me", *running: str) -> InstanceInfo:
    return InstanceInfo(instance_id, "host", 123, 1_700_000_000_000, "1.2.3", 4, running)


def test_an_instance_record_is_json_with_a_ttl_and_a_zset_entry(backend, client):
    (live,) = backend.heartbeat(info("me", "jöb"), 5_000)
    record = json.loads(client.get("{pfx}:instance:me"))
    assert record == {"v": 1, "instance_id": "me", "host": "host", "pid": 123,
                      "started_at_ms": 1_700_000_000_000, "library_version": "1.2.3",
                      "max_concurrent": 4, "running": ["jöb"], "jobs_digest": "",
                      "last_heartbeat_ms": live.last_heartbeat_ms}
    assert 0 < client.pttl("{pfx}:instance:me") <= 5_000
    assert client.zscore(INSTANCES_KEY, "me") == live.last_heartbeat_ms + 5_000
    backend.leave("me")
    assert client.exists("{pfx}:instance:me", INSTANCES_KEY) == 0


def test_a_heartbeat_is_one_script_call_whoever_is_live(backend, client):
    for n in range(20):
        backend.heartbeat(info(f"peer-{n:02}"), LONG)
    evalsha, evals, loads = script_calls(client)
    assert len(backend.heartbeat(info("me", *(f"job-{n}" for n in range(100))), LONG)) == 21
    assert script_calls(client) == (evalsha + 1, evals, loads)


def test_a_heartbeat_drops_the_expired_records(backend, client):
    backend.heartbeat(info("gone"), 50)
    time.sleep(0.1)
    client.set("{pfx}:instance:gone", "kept past its TTL")  # its zset entry decides
    assert [i.instance_id for i in backend.heartbeat(info("me"), LONG)] == ["me"]
    assert client.zrange(INSTANCES_KEY, 0, -1) == ["me"]
    assert client.exists("{pfx}:instance:gone") == 0


def test_a_heartbeat_goes_through_the_bounded_refresh_client(backend, monkeypatch):
    # It is sent from the lease refresher's thread: it must fail as fast as a refresh does
    used = []
    original = backend._evalsha
    monkeypatch.setattr(backend, "_evalsha", lambda name, keys, args, client: (
        used.append((name, client)), original(name, keys, args, client))[1])
    backend.heartbeat(info(), LONG)
    backend.leave("me")
    backend.instances()
    assert used == [("heartbeat", backend._refresh_client), ("heartbeat", backend._refresh_client),
                    ("heartbeat", backend._client)]


GARBAGE = {
    "not JSON": lambda c, key: c.set(key, "{not json"),
    "a JSON array": lambda c, key: c.set(key, "[1, 2]"),
    "another layout": lambda c, key: c.set(key, json.dumps({"v": 2, "instance_id": "ghost"})),
    "a pid as text": lambda c, key: c.set(key, json.dumps(_record(pid="123"))),
    "a boolean count": lambda c, key: c.set(key, json.dumps(_record(max_concurrent=True))),
    "running not names": lambda c, key: c.set(key, json.dumps(_record(running=[1]))),
    "another instance": lambda c, key: c.set(key, json.dumps(_record(instance_id="other"))),
    "invalid UTF-8": lambda c, key: c.set(key, b"\xff\xfe"),
    "deep nesting": lambda c, key: c.set(key, "[" * 100_000 + "]" * 100_000),
    "a hash": lambda c, key: c.hset(key, "v", "1"),
}


def _record(**changes) -> dict:
    record = {"v": 1, "instance_id": "ghost", "host": "h", "pid": 1, "started_at_ms": 1,
              "library_version": "1", "max_concurrent": 1, "running": [],
              "last_heartbeat_ms": 1}
    record.update(changes)
    return record


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_under_an_instance_key_is_skipped_and_logged_once(backend, redis_server,
                                                                  caplog, garbage):
    # Given a live-looking zset entry whose record is not of our form
    raw = redis_server.client()
    garbage(raw, "{pfx}:instance:ghost")
    raw.zadd(INSTANCES_KEY, {"ghost": 2**52})
    # When instances heartbeat and read, twice
    with caplog.at_level(logging.WARNING, logger="pyscheduler.redis"):
        for _ in range(2):
            assert [i.instance_id for i in backend.heartbeat(info(), LONG)] == ["me"]
            assert [i.instance_id for i in backend.instances()] == ["me"]
    raw.close()
    # Then the record was skipped, never fatal, and logged once
    assert caplog.text.count("'ghost'") == 1
    assert "not of our form" in caplog.text


def test_a_foreign_value_under_the_instances_key_is_reset_by_a_heartbeat(backend, client,
                                                                        caplog):
    client.set(INSTANCES_KEY, "not a zset")
    with caplog.at_level(logging.ERROR, logger="pyscheduler.redis"):
        assert backend.instances() == []  # reading writes nothing
        assert client.type(INSTANCES_KEY) == "string"
        assert [i.instance_id for i in backend.heartbeat(info(), LONG)] == ["me"]
    assert client.type(INSTANCES_KEY) == "zset"
    assert caplog.text.count("not of our form") == 1


@pytest.mark.parametrize("garbage", [{"members": "not a number"}, {"members": "9" * 40},
                                     "a string", ["a", "list"]])
def test_garbage_under_the_change_counters_reads_as_0_and_is_replaced(backend, client,
                                                                      garbage):
    if isinstance(garbage, dict):
        client.hset(EPOCHS_KEY, mapping=garbage)
    elif isinstance(garbage, list):
        client.rpush(EPOCHS_KEY, *garbage)
    else:
        client.set(EPOCHS_KEY, garbage)
    assert backend.claim("me", [], LONG, 0).members_epoch == 0  # and no error
    backend.heartbeat(info(), LONG)  # a join: the counters move on, as counters of ours
    assert backend.claim("me", [], LONG, 0).members_epoch >= 1
    register_due(backend, "doomed")
    backend.remove("doomed")
    assert backend.claim("me", [], LONG, 0).removals_epoch >= 1
    assert client.type(EPOCHS_KEY) == "hash"


# -- run history ------------------------------------------------------------------------------

HISTORY_KEY = "{pfx}:history:job"
GROUP_HISTORY_KEY = "{pfx}:history"


def finished_once(backend, history_limit: int = 10, **fields) -> None:
    """Run job "job" (registered with no regular occurrence) once now, and finish it."""
    backend.register([JobDefinition("job", None)])
    backend.run_now("job")
    (state,) = backend.get_states(["job"])
    claim = ClaimRequest("job", f"owner-{time.monotonic_ns()}", state.due_ms, state.next_run_ms,
                         None, None)
    (claimed,) = backend.claim("i", [claim], LONG, 0).claims
    backend.finish([Outcome(lease(claimed), fields.pop("succeeded", True),
                            history_limit=history_limit, **fields)])


def valid_record() -> dict[str, object]:
    return {"v": 1, "job": "job", "scheduled": "1700000000000", "attempt": "1",
            "kind": "regular", "owner": "h:1:abcdef012345:1", "fence": "1700000000000000",
            "started": "1700000000001", "duration": "0.5", "outcome": "succeeded", "error": ""}


def test_the_history_record_is_written_in_the_finish_script_itself(backend, client):
    (state,) = register_due(backend, "job")
    (claimed,) = backend.claim("i", [request(state)], LONG, 0).claims
    evalsha, evals, loads = script_calls(client)
    pushes = int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))
    backend.finish([Outcome(lease(claimed), False, "boom", 0.5, history_limit=3)])
    # one script call, which pushed the record on the job's list and the group's
    assert script_calls(client) == (evalsha + 1, evals, loads)
    assert int(client.info("commandstats")["cmdstat_lpush"]["calls"]) == pushes + 2
    assert client.lrange(HISTORY_KEY, 0, -1) == client.lrange(GROUP_HISTORY_KEY, 0, -1)


def test_history_records_are_plain_json_text_under_hash_tagged_keys(backend, redis_server,
                                                                    client):
    finished_once(backend, succeeded=False, error="bad <b>", duration=0.25)
    assert {key for key in client.keys("*") if "history" in key} == {HISTORY_KEY,
                                                                       GROUP_HISTORY_KEY}
    raw = redis_server.client()
    (stored,) = raw.lrange(HISTORY_KEY.encode(), 0, -1)
    raw.close()
    assert not stored.startswith(b"\x80")  # no pickle
    record = json.loads(stored.decode("utf-8"))
    assert record.pop("v") == 1
    assert all(isinstance(value, str) for value in record.values())
    assert (record["outcome"], record["error"], record["duration"]) == ("failed", "bad <b>",
                                                                        "0.25")
    # when it was written, by the server's clock in µs: what partitions' lists merge by
    assert int(record["recorded"]) >= int(record["started"]) * 1000


def test_the_job_list_is_trimmed_in_the_same_call(backend, client):
    for _ in range(4):
        finished_once(backend, history_limit=2)
    assert client.llen(HISTORY_KEY) == 2 and client.llen(GROUP_HISTORY_KEY) == 4


def handed_back(backend) -> ClaimRequest:
    """Claim job "job" (registered with no regular occurrence) and hand it back as a shutdown
    does: the request of a claim, with recovery disabled, that abandons it."""
    backend.register([JobDefinition("job", None)])
    backend.run_now("job")
    (state,) = backend.get_states(["job"])
    (claimed,) = backend.claim("i", [ClaimRequest("job", "stopping", state.due_ms,
                                                  state.next_run_ms, None, None)],
                               LONG, 0).claims
    assert backend.interrupt([lease(claimed)]) == [True]
    (state,) = backend.get_states(["job"])
    return ClaimRequest("job", "rescuer", state.due_ms, state.next_run_ms, None, None,
                        max_recoveries=0, history_limit=10)


def test_an_abandonment_is_recorded_in_the_claim_script_itself(backend, client):
    # Given an occurrence handed back, with recovery disabled
    abandoning = handed_back(backend)
    calls = script_calls(client)
    pushes = int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))
    # When a claim abandons it
    assert backend.claim("i", [abandoning], LONG, 0).abandoned == ["job"]
    # Then one script call pushed its record on the job's list and the group's, as plain JSON
    assert script_calls(client) == (calls[0] + 1, *calls[1:])
    assert int(client.info("commandstats")["cmdstat_lpush"]["calls"]) == pushes + 2
    (stored,) = client.lrange(HISTORY_KEY, 0, -1)
    assert client.lrange(GROUP_HISTORY_KEY, 0, -1) == [stored]
    record = json.loads(stored)
    assert (record["outcome"], record["duration"], record["owner"], record["kind"]) == (
        "abandoned", "0.0", "stopping", "manual")


def test_request_rows_without_a_history_limit_abandon_without_a_record(backend, client,
                                                                       monkeypatch):
    # Given a client that sends request rows of 9 values, as before history_limit was one
    abandoning = handed_back(backend)
    original = backend._evalsha

    def nine_values(name, keys, args, used_client):
        if name == "claim":
            args = list(args)
            args[8] = json.dumps([row[:9] for row in json.loads(args[8])])
        return original(name, keys, args, used_client)

    monkeypatch.setattr(backend, "_evalsha", nine_values)
    # When a claim abandons the occurrence
    batch = backend.claim("i", [abandoning], LONG, 0)
    # Then Redis takes the row as one without a history limit: abandoned, nothing recorded
    assert batch.abandoned == ["job"]
    assert client.exists(HISTORY_KEY, GROUP_HISTORY_KEY) == 0
    assert backend.get_states(["job"])[0].failure_count == 1


def _broken(**changes: object) -> str:
    record = valid_record()
    record.update(changes)
    return json.dumps({key: value for key, value in record.items() if value is not None})


GARBAGE = {
    "not json": "not json",
    "a JSON list": json.dumps(["job"]),
    "another layout": _broken(v=2),
    "a missing field": _broken(owner=None),
    "a number for text": _broken(fence=17),
    "a float fence": _broken(fence="1e5"),
    "an unknown kind": _broken(kind="evil"),
    "an unknown outcome": _broken(outcome="exploded"),
    "a date past 9999": _broken(scheduled="99999999999999999"),
    "attempt zero": _broken(attempt="0"),
    "a nan duration": _broken(duration="nan"),
    "a negative duration": _broken(duration="-1"),
    "an error past its bound": _broken(error="x" * 2_001),
    "an empty job name": _broken(job=""),
    "a recorded time not an integer": _broken(recorded="yesterday"),
    "a recorded time as a number": _broken(recorded=1700000000001000),
    "deep nesting": "[" * 100_000,
}


def test_records_not_of_our_form_are_skipped_and_logged(backend, client, redis_server, caplog):
    # Given the job's history key holding garbage around one valid record
    client.rpush(HISTORY_KEY, *GARBAGE.values(), json.dumps(valid_record()))
    raw = redis_server.client()
    raw.rpush(HISTORY_KEY.encode(), b"\xff\xfe invalid utf-8", b"\x80\x04\x95 pickle")
    raw.close()

    # When it is read
    with caplog.at_level(logging.WARNING, logger="pyscheduler.redis"):
        records = backend.history("job", 100)

    # Then only the valid record comes back, and one line says what was skipped
    assert [(r.job, r.fence, r.duration) for r in records] == [("job", 1700000000000000, 0.5)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"skipped {len(GARBAGE) + 2} record(s)" in line and HISTORY_KEY in line


def test_a_history_key_of_another_type_reads_as_empty_and_is_replaced(backend, client, caplog):
    client.hset(HISTORY_KEY, "not", "a list")
    with caplog.at_level(logging.WARNING, logger="pyscheduler.redis"):
        assert backend.history("job", 10) == []
    assert "holds no list" in caplog.text
    finished_once(backend)
    assert client.type(HISTORY_KEY) == "list" and len(backend.history("job", 10)) == 1


def test_remove_leaves_garbage_in_the_group_list_to_the_readers(backend, client):
    finished_once(backend)
    client.rpush(GROUP_HISTORY_KEY, "garbage")
    assert backend.remove("job")
    assert client.exists(HISTORY_KEY) == 0
    assert client.lrange(GROUP_HISTORY_KEY, 0, -1) == ["garbage"]
    assert backend.history(None, 10) == []
