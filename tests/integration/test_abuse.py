"""Protection before authentication, against the real relay on loopback: per-address caps on
connections and on large-body slots of a relay thread ([limits] connections_per_ip,
large_bodies_per_ip). Several clients on one machine: sockets bound to other loopback addresses
(127.0.0.2, 127.0.0.3) are other peers to the relay.
"""

import time

from helpers import PeerClosed, RawConnection, raw_request, wait_for

CONNECTIONS_PER_IP = 4


def healthz_works(port, source_host="127.0.0.1"):
    with RawConnection(port, timeout_s=5.0, source_host=source_host) as connection:
        connection.send(raw_request("GET", "/healthz"))
        try:
            return connection.read_response().status == 200
        except PeerClosed:
            return False


def test_connections_per_ip_cap_closes_the_next_connection(relay_factory):
    """One thread, so every connection meets the same cap: the fifth from one address is closed
    at once, the four keep serving, another address is not affected, and a slot comes back when
    one of the four closes."""
    relay = relay_factory("abuse-connections", {"server": {"threads": 1},
                                                "limits": {"connections_per_ip": CONNECTIONS_PER_IP}})
    held = [RawConnection(relay.port, timeout_s=5.0, source_host="127.0.0.2") for _ in range(CONNECTIONS_PER_IP)]
    try:
        for connection in held:
            connection.send(raw_request("GET", "/healthz"))
            assert connection.read_response().status == 200
        with RawConnection(relay.port, timeout_s=5.0, source_host="127.0.0.2") as refused:
            assert refused.wait_closed(timeout_s=3.0)
        # The held ones still serve (keep-alive), and another address gets in.
        for connection in held:
            connection.send(raw_request("GET", "/healthz"))
            assert connection.read_response().status == 200
        assert healthz_works(relay.port, "127.0.0.3")
        # One closes: its slot is free again once the relay saw the close.
        held.pop().close()
        assert wait_for(lambda: healthz_works(relay.port, "127.0.0.2"), timeout_s=3.0)
    finally:
        for connection in held:
            connection.close()


def large_request_head(length):
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_large_bodies_per_ip_cap_is_429_with_retry_after(relay_factory):
    """A body larger than request_buffer_bytes takes a large-body slot while it arrives. With
    large_bodies_per_ip = 1 a second such body from the same address is answered 429 at once
    (with Retry-After), while another address still gets a slot."""
    relay = relay_factory("abuse-large", {"server": {"threads": 1},
                                          "limits": {"large_bodies_per_ip": 1, "large_bodies_per_thread": 4,
                                                     "request_buffer_bytes": "64k"}})
    length = 200 * 1024
    with RawConnection(relay.port, timeout_s=5.0, source_host="127.0.0.2") as first:
        first.send(large_request_head(length) + b"{")  # holds its slot: the body is still coming
        time.sleep(0.2)
        with RawConnection(relay.port, timeout_s=5.0, source_host="127.0.0.2") as second:
            second.send(large_request_head(length) + b"{")
            response = second.read_response()
            assert response.status == 429, response.body
            assert response.json()["error"]["type"] == "rate_limit_error"
            assert response.json()["error"]["code"] == "too_many_large_bodies"
            assert int(response.header("retry-after")) >= 1
        with RawConnection(relay.port, timeout_s=5.0, source_host="127.0.0.3") as other:
            other.send(large_request_head(length) + b"{")
            time.sleep(0.3)
            assert not other.readable(0.0), "another address must get a slot and be left to send its body"
