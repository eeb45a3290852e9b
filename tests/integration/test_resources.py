"""Bounded resources, measured from /proc: a client that stops reading must not
make the relay buffer the stream in memory, and clients that vanish
mid-stream must not leave descriptors behind.

These relays run one event-loop thread so that per-thread pools (pooled
upstream connections included) are the same between warm-up and test."""

import json
import time

import pytest

from helpers import (MIB, RawConnection, chat_json, content_of_chunk_dicts, decode_chunk_events, expected_tokens,
                     http_request, open_fd_count, parse_sse, raw_request, rss_bytes, wait_for)

RSS_GROWTH_BYTES_MAX = 6 * MIB
LINE_BYTES = 200000


@pytest.fixture(scope="module")
def drain_relay(relay_factory):
    return relay_factory("relay-resources-drain", {"server": {"threads": 1}})


@pytest.fixture(scope="module")
def cancel_relay(relay_factory):
    return relay_factory("relay-resources-cancel",
                         {"server": {"threads": 1}, "relay": {"client_disconnect": "cancel"}})


def stream_request(relay, mock):
    return raw_request("POST", "/v1/chat/completions", chat_json(stream=True, mock=mock), headers=relay.auth)


def read_stream(connection, head, timeout_s=60):
    """Reads the rest of a streaming response; returns the decoded chunk dicts."""
    body = b"".join(connection.iter_body(head, timeout_s=timeout_s))
    events, problems = parse_sse(body)
    assert problems == []
    objects, saw_done = decode_chunk_events(events)
    assert saw_done
    return objects


def stable_fd_count(pid, settle_s=0.3, timeout_s=5.0):
    """The relay's open descriptor count once two readings settle_s apart agree."""
    deadline = time.monotonic() + timeout_s
    previous = open_fd_count(pid)
    while True:
        time.sleep(settle_s)
        current = open_fd_count(pid)
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def test_slow_reader_does_not_grow_relay_memory(drain_relay):
    mock = f"line_bytes={LINE_BYTES};chunks=100"
    # Warm-up at full speed: touches every buffer this kind of stream uses.
    for _ in range(2):
        with RawConnection(drain_relay.port, timeout_s=30) as connection:
            connection.send(stream_request(drain_relay, f"line_bytes={LINE_BYTES};chunks=10"))
            head = connection.read_head()
            assert head.status == 200
            assert content_of_chunk_dicts(read_stream(connection, head)) == ["x" * LINE_BYTES] * 10
    baseline = rss_bytes(drain_relay.pid)

    with RawConnection(drain_relay.port, timeout_s=60, recv_buffer_bytes=4096) as connection:
        connection.send(stream_request(drain_relay, mock))
        head = connection.read_head()
        assert head.status == 200
        peak = baseline
        sample_until = time.monotonic() + 2.5
        while time.monotonic() < sample_until:  # not reading: ~20 MB are waiting upstream
            peak = max(peak, rss_bytes(drain_relay.pid))
            time.sleep(0.05)
        objects = read_stream(connection, head)
    got = content_of_chunk_dicts(objects)
    assert len(got) == 100 and all(content == "x" * LINE_BYTES for content in got), \
        "the slow reader did not get the whole stream"
    growth = peak - baseline
    assert growth <= RSS_GROWTH_BYTES_MAX, \
        f"relay RSS grew by {growth / MIB:.1f} MiB while a client was not reading (baseline {baseline / MIB:.1f} MiB)"


def _warm_up_concurrent_streams(relay, count):
    connections = [RawConnection(relay.port, timeout_s=20) for _ in range(count)]
    try:
        for connection in connections:
            connection.send(stream_request(relay, "gap_ms=20;chunks=10"))
        for connection in connections:
            head = connection.read_head()
            assert head.status == 200
            assert content_of_chunk_dicts(read_stream(connection, head)) == expected_tokens(10)
    finally:
        for connection in connections:
            connection.close()


@pytest.mark.parametrize("relay_name", ["drain_relay", "cancel_relay"])
def test_client_disconnect_mid_stream_releases_descriptors(request, relay_name):
    relay = request.getfixturevalue(relay_name)
    _warm_up_concurrent_streams(relay, 3)
    baseline = stable_fd_count(relay.pid)

    connections = [RawConnection(relay.port, timeout_s=10) for _ in range(3)]
    for connection in connections:
        connection.send(stream_request(relay, "gap_ms=50;chunks=40"))  # about 2 s upstream
    for index, connection in enumerate(connections):
        head = connection.read_head()
        assert head.status == 200
        received = b""
        for piece in connection.iter_body(head, timeout_s=10):
            received += piece
            if b"tok0 " in received:
                break
        assert b"tok0 " in received and b"[DONE]" not in received
        connection.close(reset=(index == 0))  # one RST, the others a FIN

    settled = wait_for(lambda: open_fd_count(relay.pid) <= baseline, timeout_s=10, interval_s=0.1)
    assert settled, (f"relay still has {open_fd_count(relay.pid)} descriptors open 10 s after its clients left "
                     f"(baseline {baseline})")

    status, _, body = http_request(relay.url + "/healthz")
    assert status == 200 and body.strip() == b"ok"
    with RawConnection(relay.port, timeout_s=20) as connection:
        connection.send(stream_request(relay, "chunks=3"))
        head = connection.read_head()
        assert head.status == 200
        assert content_of_chunk_dicts(read_stream(connection, head)) == expected_tokens(3)


def test_many_short_connections_do_not_leak_descriptors(drain_relay):
    for _ in range(3):
        with RawConnection(drain_relay.port) as connection:
            connection.send(raw_request("POST", "/v1/chat/completions", chat_json(mock="chunks=1"),
                                        headers=drain_relay.auth))
            assert connection.read_response().status == 200
    baseline = stable_fd_count(drain_relay.pid)
    for index in range(40):
        with RawConnection(drain_relay.port) as connection:
            if index % 4 == 0:
                connection.send(raw_request("POST", "/v1/chat/completions", chat_json(mock="chunks=1"),
                                            headers=drain_relay.auth))
                assert json.loads(connection.read_response().body)["usage"]["completion_tokens"] == 1
            elif index % 4 == 1:
                connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half a head, then gone
            elif index % 4 == 2:
                connection.send(raw_request("GET", "/healthz"))
                connection.close(reset=True)
            # index % 4 == 3: connect and leave without a byte
    settled = wait_for(lambda: open_fd_count(drain_relay.pid) <= baseline, timeout_s=10, interval_s=0.1)
    assert settled, f"{open_fd_count(drain_relay.pid)} descriptors open, baseline {baseline}"
