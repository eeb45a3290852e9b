"""Routes, keys, failover and circuit breakers, against mock upstreams with injected faults.

Each failure class before the first byte (connect refused, TLS handshake, timeout before the
head, 5xx, 429, 401) moves the request to the next route; the client's reassembled text equals
one upstream's text and the usage record names the upstream that answered and the attempts.
Once a byte reached the client nothing is retried. Breakers open after failures in a row, skip
their upstream while open, probe and close once it recovers, and never open on a client's own
errors (400, 404, 413) or on a client that went away. Keys of an upstream are used in turn; a
key refused with 401 leaves rotation for every thread, and is logged. The relay here runs one
thread so that its per-thread breakers and round-robin are exact."""

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import UPSTREAM_API_KEY, start_mock
from helpers import chat_body, content_of_chunk_dicts, decode_chunk_events, expected_tokens, http_request, \
    parse_sse, usage_records, wait_for

OPEN_MS = 1500


@pytest.fixture(scope="module")
def flaky(mock_bin, workdir):
    """A mock of its own, so that its request counter counts only what a test sends it."""
    upstream = start_mock(mock_bin, workdir, "mock-flaky", threads=1)
    yield upstream
    upstream.process.stop()


@pytest.fixture(scope="module")
def anykey(mock_bin, workdir):
    """A mock that takes any key (and echoes it with echo_key=1)."""
    upstream = start_mock(mock_bin, workdir, "mock-anykey", api_key=None, threads=1)
    yield upstream
    upstream.process.stop()


def fault_file(workdir, name):
    """A path whose existence makes a mock route fail (fail_file=); removed when the module ends."""
    path = os.path.join(workdir, name)
    yield path
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture(scope="module")
def sticky_fail_file(workdir):
    yield from fault_file(workdir, "routing-sticky-upstream-fails")


@pytest.fixture(scope="module")
def fail_file(workdir):
    yield from fault_file(workdir, "routing-upstream-fails")


def good(upstream="plain", model="mock-small", **words):
    return " ".join([upstream, model] + [f"{key}={value}" for key, value in words.items()])


@pytest.fixture(scope="module")
def routing(relay_factory, flaky, anykey, mock, certs, fail_file, sticky_fail_file, dead_port):
    tls_to_plain = flaky.base_url.replace("http://", "https://")
    return relay_factory("relay-routing", {
        "server": {"threads": 1},
        "routing": {"attempts_max": 3, "failover_ms": 20000, "breaker_failures": 3, "breaker_error_percent": 0,
                    "breaker_open_ms": OPEN_MS, "key_refused_retry_ms": 60000},
        "upstream flaky": {"base_url": flaky.base_url, "api_key": UPSTREAM_API_KEY},
        "upstream slow": {"base_url": flaky.base_url, "api_key": UPSTREAM_API_KEY, "first_byte_ms": 300},
        "upstream badtls": {"base_url": tls_to_plain, "api_key": UPSTREAM_API_KEY, "ca_file": certs.ca_cert},
        "upstream flaky2": {"base_url": flaky.base_url, "api_key": UPSTREAM_API_KEY},
        "upstream dead2": {"base_url": f"http://127.0.0.1:{dead_port}/v1"},
        "upstream keys": {"base_url": anykey.base_url, "api_key": "sk-a, sk-b sk-c"},
        "upstream revoked": {"base_url": mock.base_url, "api_key": f"sk-revoked, {UPSTREAM_API_KEY}",
                             "ca_file": certs.ca_cert},
        "model fo-connect": {"route": ["dead mock-small priority=1", good()]},
        "model fo-tls": {"route": ["badtls mock-small priority=1", good()]},
        "model fo-timeout": {"route": ["slow mock-small:first_byte_ms=3000 priority=1", good()]},
        "model fo-503": {"route": ["plain mock-small:status=503 priority=1", good()]},
        "model fo-429": {"route": ["plain mock-small:status=429 priority=1", good()]},
        "model fo-401": {"route": ["wrongkey mock-small priority=1", good()]},
        "model fo-all-fail": {"route": ["plain mock-small:status=500", "dead mock-small"]},
        "model fo-only-429": {"route": ["plain mock-small:status=429"]},
        "model midstream": {"route": ["flaky mock-small:disconnect_after=2 priority=1", good()]},
        "model breaker": {"route": [f"flaky mock-small:fail_file={fail_file} priority=1", good()]},
        "model breaker-only": {"route": ["dead2 mock-small"]},
        "model client-errors": {"route": ["flaky mock-small:status=400"]},
        "model client-404": {"route": ["flaky mock-small:status=404"]},
        "model client-413": {"route": ["flaky mock-small:status=413"]},
        "model client-slow": {"route": ["flaky mock-small:first_byte_ms=400"]},
        "model flaky-ok": {"route": ["flaky mock-small"]},
        "model weighted": {"route": ["keys a:echo_key=1 weight=3", "keys b:echo_key=1 weight=1"]},
        "model rotate": {"route": ["keys mock-small:echo_key=1"]},
        "model revoked": {"route": ["revoked mock-small:echo_key=1"]},
        "model sticky": {"route": ["keys a:echo_key=1", "keys b:echo_key=1"], "affinity": "user"},
        "model sticky-header": {"route": ["keys a:echo_key=1", "keys b:echo_key=1"], "affinity": "header",
                                "affinity_header": "x-session-id"},
        "model sticky-fo": {"route": [f"flaky2 a:fail_file={sticky_fail_file}", "plain b"], "affinity": "user"},
    })


def post(relay, model, stream=False, timeout_s=20, **extra):
    return http_request(relay.url + "/v1/chat/completions", "POST",
                        body=json.dumps(chat_body(model=model, stream=stream, **extra)).encode(),
                        headers={"Content-Type": "application/json", **relay.auth}, timeout_s=timeout_s)


def stream_content(body):
    """The reassembled content of an SSE body, and its events."""
    events, problems = parse_sse(body)
    assert problems == []
    objects, _ = decode_chunk_events(events)
    return "".join(content_of_chunk_dicts(objects)), events


STATS_READS = {"flaky": 0}


def flaky_requests(flaky):
    """The chat requests the flaky mock has seen: its counter less our own reads of it."""
    status, _, data = http_request(flaky.url + "/mock/stats")
    assert status == 200, data
    STATS_READS["flaky"] += 1
    return json.loads(data)["requests"] - STATS_READS["flaky"]


def newest_record(relay):
    records = wait_for(lambda: usage_records(relay, relay.user_id), 5)
    return records[0]


@pytest.mark.parametrize("model", ["fo-connect", "fo-tls", "fo-timeout", "fo-503", "fo-429", "fo-401"])
def test_each_failure_before_the_first_byte_fails_over(routing, model):
    status, headers, body = post(routing, model, stream=True)
    assert status == 200, body
    content, events = stream_content(body)
    # One upstream's text, whole and once: nothing of the failed attempt reached the client.
    assert content == "".join(expected_tokens(8))
    assert events[-1].data == "[DONE]"
    record = wait_for(lambda: next((r for r in usage_records(routing, routing.user_id) if r["model"] == model), None),
                      5)
    assert record is not None
    assert record["upstream"] == "plain"
    assert record["attempts"] == 2
    assert record["completion_tokens"] == 8


def test_failover_of_a_json_response(routing):
    status, _, body = post(routing, "fo-503")
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "".join(expected_tokens(8))


def test_every_route_failed_is_502_upstream_error(routing):
    status, headers, body = post(routing, "fo-all-fail")
    assert status == 502, body
    error = json.loads(body)["error"]
    assert error["code"] == "upstream_error"
    assert headers.get("x-should-retry") == "true"


def test_a_429_with_no_route_left_passes_through(routing):
    status, headers, body = post(routing, "fo-only-429")
    assert status == 429, body
    assert json.loads(body)["error"]["code"] == "mock_429"


def test_no_retry_once_a_byte_reached_the_client(routing, flaky):
    before = flaky_requests(flaky)
    status, _, body = post(routing, "midstream", stream=True)
    assert status == 200
    content, events = stream_content(body)
    assert content == "".join(expected_tokens(2))
    assert not any(event.data == "[DONE]" for event in events)
    error = json.loads(events[-1].data)["error"]
    assert error["code"] == "upstream_error"
    # The flaky upstream saw the request once, and the good route not at all.
    assert flaky_requests(flaky) == before + 1
    record = newest_record(routing)
    assert record["upstream"] == "flaky" and record["attempts"] == 1


def test_breaker_opens_skips_probes_and_closes(routing, flaky, fail_file):
    open(fail_file, "w").close()
    before = flaky_requests(flaky)
    # Three failures in a row (each request still answered by the next route) open it.
    for _ in range(3):
        status, _, body = post(routing, "breaker")
        assert status == 200, body
    assert flaky_requests(flaky) == before + 3
    # Open: the failing upstream is not even tried.
    for _ in range(3):
        status, _, body = post(routing, "breaker")
        assert status == 200, body
    assert flaky_requests(flaky) == before + 3
    record = newest_record(routing)
    assert record["upstream"] == "plain" and record["attempts"] == 1
    # Past the open spell, one probe goes: it fails, the breaker opens again.
    time.sleep(OPEN_MS / 1000 + 0.2)
    status, _, _ = post(routing, "breaker")
    assert status == 200
    assert flaky_requests(flaky) == before + 4
    status, _, _ = post(routing, "breaker")
    assert flaky_requests(flaky) == before + 4
    # The upstream recovers: the next probe succeeds and the breaker closes.
    os.unlink(fail_file)
    time.sleep(OPEN_MS / 1000 + 0.2)
    for index in range(3):
        status, _, body = post(routing, "breaker")
        assert status == 200, body
        assert flaky_requests(flaky) == before + 5 + index
    record = newest_record(routing)
    assert record["upstream"] == "flaky" and record["attempts"] == 1


def test_every_breaker_open_is_503_provider_unavailable(routing):
    for _ in range(3):
        status, _, body = post(routing, "breaker-only")
        assert status == 502, body
    status, headers, body = post(routing, "breaker-only")
    assert status == 503, body
    error = json.loads(body)["error"]
    assert error["code"] == "provider_unavailable"
    assert 1 <= int(headers["retry-after"]) <= OPEN_MS // 1000 + 1
    assert headers.get("x-should-retry") == "true"


def test_client_errors_and_departures_never_open_the_breaker(routing, flaky):
    for _ in range(4):
        for model, expected in (("client-errors", 400), ("client-404", 404), ("client-413", 413)):
            status, _, body = post(routing, model)
            assert status == expected, body
    # Clients that leave before the answer.
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", routing.port)) as connection:
            payload = json.dumps(chat_body(model="client-slow")).encode()
            connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               + f"Authorization: Bearer {routing.api_key}\r\n".encode()
                               + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            time.sleep(0.05)
    # Twelve client errors and four departures later, the upstream still takes requests.
    before = flaky_requests(flaky)
    status, _, body = post(routing, "flaky-ok")
    assert status == 200, body
    assert flaky_requests(flaky) >= before + 1


def test_keys_are_used_in_turn(routing):
    contents = []
    for _ in range(6):
        status, _, body = post(routing, "rotate")
        assert status == 200, body
        contents.append(json.loads(body)["choices"][0]["message"]["content"])
    assert contents in (["sk-a", "sk-b", "sk-c"] * 2, ["sk-b", "sk-c", "sk-a"] * 2, ["sk-c", "sk-a", "sk-b"] * 2)


def test_smooth_weighted_round_robin_spreads_by_weight(routing):
    models = []
    for _ in range(8):
        status, _, body = post(routing, "weighted")
        assert status == 200, body
        models.append(json.loads(body)["model"])
    # Weights 3 and 1: three of every four, interleaved (a a b a), never four in a row.
    assert models.count("a") == 6 and models.count("b") == 2
    assert models[:4] == ["a", "a", "b", "a"] and models[4:] == ["a", "a", "b", "a"]


def test_a_refused_key_leaves_rotation(routing):
    for index in range(4):
        status, _, body = post(routing, "revoked")
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["content"] == UPSTREAM_API_KEY
    record = next(r for r in usage_records(routing, routing.user_id) if r["model"] == "revoked")
    assert record["attempts"] == 1  # the newest: the refused key was no longer tried
    log = routing.process.stderr_text()
    assert log.count("the upstream 'revoked' refused its API key #1 with HTTP 401") == 1


def answer_of(relay, model, user=None, headers=None):
    extra = {"user": user} if user is not None else {}
    status, _, body = http_request(relay.url + "/v1/chat/completions", "POST",
                                   body=json.dumps(chat_body(model=model, **extra)).encode(),
                                   headers={"Content-Type": "application/json", **relay.auth, **(headers or {})})
    assert status == 200, body
    document = json.loads(body)
    return document["model"], document["choices"][0]["message"]["content"]


@pytest.mark.parametrize("by_header", [False, True])
def test_affinity_keeps_a_user_on_one_route_and_key(routing, by_header):
    placed = {}
    for index in range(16):
        user = f"user-{index}"
        if by_header:
            answers = {answer_of(routing, "sticky-header", headers={"x-session-id": user}) for _ in range(3)}
        else:
            answers = {answer_of(routing, "sticky", user=user) for _ in range(3)}
        assert len(answers) == 1, (user, answers)  # the same route and the same key, every time
        placed[user] = answers.pop()
    # Different users spread over both routes and over the keys.
    assert {route for route, _ in placed.values()} == {"a", "b"}
    assert len({key for _, key in placed.values()}) >= 2


def test_affinity_moves_while_unhealthy_and_comes_back(routing, sticky_fail_file):
    users = {f"u{index}": answer_of(routing, "sticky-fo", user=f"u{index}")[0] for index in range(12)}
    on_a = [user for user, route in users.items() if route == "a"]
    on_b = [user for user, route in users.items() if route == "b"]
    assert on_a and on_b
    open(sticky_fail_file, "w").close()
    for _ in range(4):  # fails over, then the breaker opens after three failures
        assert answer_of(routing, "sticky-fo", user=on_a[0])[0] == "b"
    for user in on_b:
        assert answer_of(routing, "sticky-fo", user=user)[0] == "b"
    os.unlink(sticky_fail_file)
    time.sleep(OPEN_MS / 1000 + 0.2)
    # The first request is the probe: it succeeds, the breaker closes, the user is home again.
    for _ in range(3):
        assert answer_of(routing, "sticky-fo", user=on_a[0])[0] == "a"


def test_upstreams_show_breakers_and_refused_keys(routing):
    """GET /admin/upstreams and `ringctl upstreams`: the open breaker and the refused key of the tests above."""
    for _ in range(5):
        status, _, _ = post(routing, "breaker-only")
        if status == 503:
            break
    assert status == 503
    status, document = routing.admin("GET", "/admin/upstreams")
    assert status == 200, document
    upstreams = {entry["name"]: entry for entry in document["data"]}
    dead = upstreams["dead2"]["breaker"]
    assert dead["state"] == "open" and dead["threads_open"] == 1 and dead["threads"] == 1
    assert dead["times_opened"] >= 1
    assert upstreams["plain"]["breaker"]["state"] == "closed"
    keys = upstreams["revoked"]["keys"]
    assert [key["index"] for key in keys] == [1, 2]
    assert keys[0]["in_rotation"] is False and keys[0]["refused_status"] == 401
    assert 0 < keys[0]["retry_in_ms"] <= 60000
    assert keys[1]["in_rotation"] is True and keys[1]["refused_status"] is None
    assert keys[1]["breaker"]["state"] == "closed"
    assert [key["index"] for key in upstreams["keys"]["keys"]] == [1, 2, 3]
    assert "sk-a" not in json.dumps(document) and UPSTREAM_API_KEY not in json.dumps(document)

    completed = subprocess.run([os.environ["RINGCTL_BIN"], "--admin-url", routing.admin_url, "--token",
                                routing.admin_token, "upstreams"], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    lines = {line.split()[0]: line for line in completed.stdout.splitlines() if line.strip()}
    assert "open (open on 1 of 1 threads)" in lines["dead2"]
    assert "#1 refused 401 (retry in" in lines["revoked"] and "#2 ok" in lines["revoked"]
    assert "#1 ok, #2 ok, #3 ok" in lines["keys"]
