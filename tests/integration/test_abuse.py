"""Protection before authentication, against the real relay on loopback:

- [accounts] registration = closed (403 registration_closed);
- registrations per client address per hour, failed logins per address per minute and the
  per-account backoff after failures in a row (429 rate_limit_error with Retry-After);
- the bound on password jobs queued for the control thread (503 server_busy with Retry-After);
- a login flood during which `ringctl users list` still answers within a second (the latency is
  measured and printed: run with -s to see it);
- X-Forwarded-For believed only from [server] trusted_proxies;
- per-address caps on connections and on large-body slots of a relay thread ([limits]
  connections_per_ip, large_bodies_per_ip).

Several clients on one machine: sockets bound to other loopback addresses (127.0.0.2, 127.0.0.3,
...) are other peers to the relay.
"""

import http.client
import json
import os
import statistics
import subprocess
import threading
import time

import pytest

from helpers import PeerClosed, RawConnection, raw_request, wait_for

PASSWORD = "correct horse battery"
WRONG = "not the password at all"


def call(relay, path, body, source_host="127.0.0.1", headers=None):
    """POST JSON from source_host; returns (status, headers as a lower-case dict, parsed body)."""
    connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30, source_address=(source_host, 0))
    try:
        connection.request("POST", path, body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        payload = response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, json.loads(payload)
    finally:
        connection.close()


def register(relay, email, source_host="127.0.0.1", headers=None):
    return call(relay, "/auth/register", {"email": email, "password": PASSWORD}, source_host, headers)


def login(relay, email, password=PASSWORD, source_host="127.0.0.1"):
    return call(relay, "/auth/login", {"email": email, "password": password}, source_host)


def assert_refused(status, headers, document, expected_status, error_type, code):
    assert status == expected_status, document
    assert set(document["error"]) == {"message", "type", "param", "code"}, document
    assert document["error"]["type"] == error_type, document
    assert document["error"]["code"] == code, document
    return headers


def retry_after(headers):
    return int(headers["retry-after"])


def away_from_window_edge(length_s, margin_s=5.0):
    """Waits until at least margin_s of the current fixed window (of length_s on the UTC clock) is
    left, so a test's counts do not straddle two windows."""
    left = length_s - time.time() % length_s
    if left < margin_s:
        time.sleep(left + 0.05)


# ---------------------------------------------------------------------------
# Registration.


def test_registration_closed_is_403(relay_factory):
    relay = relay_factory("abuse-closed", {"accounts": {"registration": "closed"}})
    status, headers, document = register(relay, "someone@example.com")
    assert_refused(status, headers, document, 403, "permission_error", "registration_closed")
    # Logins still go on (and fail as usual for an unknown email).
    status, _, document = login(relay, "someone@example.com")
    assert status == 401, document


def test_registrations_per_address_per_hour(relay_factory):
    relay = relay_factory("abuse-register", {"accounts": {"registrations_per_ip_per_hour": 2}})
    away_from_window_edge(3600)
    for index in range(2):
        status, _, document = register(relay, f"user{index}@example.com", "127.0.0.2")
        assert status == 200, document
    status, headers, document = register(relay, "user2@example.com", "127.0.0.2")
    assert_refused(status, headers, document, 429, "rate_limit_error", "registration_rate_limited")
    assert 1 <= retry_after(headers) <= 3600
    # No account was made: the email is still free, and another address may take it.
    status, _, document = register(relay, "user2@example.com", "127.0.0.3")
    assert status == 200, document


def test_forwarded_for_is_believed_from_trusted_proxies_only(relay_factory):
    """127.0.0.1 is a trusted proxy: the client it names in X-Forwarded-For is what counts. A peer
    that is not trusted (127.0.0.2) counts as itself whatever header it sends."""
    relay = relay_factory("abuse-forwarded", {"server": {"trusted_proxies": "127.0.0.1/32, ::1"},
                                              "accounts": {"registrations_per_ip_per_hour": 1}})
    away_from_window_edge(3600)
    forwarded = lambda client: {"X-Forwarded-For": f"{client}, 127.0.0.1"}  # noqa: E731 (the proxy chain)
    status, _, document = register(relay, "a@example.com", "127.0.0.1", forwarded("203.0.113.5"))
    assert status == 200, document
    status, headers, document = register(relay, "b@example.com", "127.0.0.1", forwarded("203.0.113.5"))
    assert_refused(status, headers, document, 429, "rate_limit_error", "registration_rate_limited")
    # Another client behind the same proxy has its own count.
    status, _, document = register(relay, "c@example.com", "127.0.0.1", forwarded("203.0.113.6"))
    assert status == 200, document
    # An untrusted peer cannot pick its address with the header.
    status, _, document = register(relay, "d@example.com", "127.0.0.2", {"X-Forwarded-For": "198.51.100.1"})
    assert status == 200, document
    status, headers, document = register(relay, "e@example.com", "127.0.0.2", {"X-Forwarded-For": "198.51.100.2"})
    assert_refused(status, headers, document, 429, "rate_limit_error", "registration_rate_limited")


# ---------------------------------------------------------------------------
# Logins.


def test_failed_logins_per_address_per_minute(relay_factory):
    relay = relay_factory("abuse-login-ip", {"accounts": {"login_failures_per_ip_per_minute": 3,
                                                          "login_failures_before_backoff": 0}})
    status, _, document = register(relay, "owner@example.com")
    assert status == 200, document
    away_from_window_edge(60)
    for index in range(3):
        status, _, document = login(relay, f"guess{index}@example.com", WRONG, "127.0.0.2")
        assert status == 401, document
    # The address is refused now, even with the right password, without a check.
    status, headers, document = login(relay, "owner@example.com", PASSWORD, "127.0.0.2")
    assert_refused(status, headers, document, 429, "rate_limit_error", "login_rate_limited")
    assert 1 <= retry_after(headers) <= 60
    # The account itself is not locked: another address logs in.
    status, _, document = login(relay, "owner@example.com", PASSWORD, "127.0.0.3")
    assert status == 200, document


def test_account_backoff_grows_and_a_success_ends_it(relay_factory):
    """After 3 failures in a row from one address the account is refused from there for 2 s, then
    4 s (the cap) after each further failure, while its owner elsewhere still logs in; unknown
    emails are treated the same; the right password after the wait logs in and ends the streak."""
    relay = relay_factory("abuse-backoff", {"accounts": {"login_failures_per_ip_per_minute": 0,
                                                         "login_failures_before_backoff": 3,
                                                         "login_backoff_base_s": 2, "login_backoff_max_s": 4}})
    status, _, document = register(relay, "victim@example.com")
    assert status == 200, document
    for email in ("victim@example.com", "nobody@example.com"):
        for index in range(3):
            status, _, document = login(relay, email, WRONG, "127.0.0.2")
            assert status == 401, document
        status, headers, document = login(relay, email, PASSWORD, "127.0.0.2")
        assert_refused(status, headers, document, 429, "rate_limit_error", "login_rate_limited")
        assert 1 <= retry_after(headers) <= 2
    # The guesser does not lock the owner out from another network.
    status, _, document = login(relay, "victim@example.com", PASSWORD, "127.0.0.9")
    assert status == 200, document
    time.sleep(2.1)
    status, _, document = login(relay, "victim@example.com", WRONG, "127.0.0.2")
    assert status == 401, document
    status, headers, document = login(relay, "victim@example.com", PASSWORD, "127.0.0.2")
    assert_refused(status, headers, document, 429, "rate_limit_error", "login_rate_limited")
    assert 3 <= retry_after(headers) <= 4
    time.sleep(4.1)
    status, _, document = login(relay, "victim@example.com", PASSWORD, "127.0.0.2")
    assert status == 200, document
    # The streak is over: one more failure is only a 401.
    status, _, document = login(relay, "victim@example.com", WRONG, "127.0.0.2")
    assert status == 401, document
    status, _, document = login(relay, "victim@example.com", PASSWORD, "127.0.0.2")
    assert status == 200, document


# ---------------------------------------------------------------------------
# The control thread under a login flood.


def flood(relay, email, threads, duration_s):
    """Logs in with the right password from `threads` threads for duration_s; returns the
    statuses seen and the Retry-After values of the 503s."""
    statuses, retry_afters = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def worker():
        while time.monotonic() < deadline:
            status, headers, document = login(relay, email)
            with lock:
                statuses.append(status)
                if status == 503:
                    assert document["error"]["code"] == "server_busy", document
                    retry_afters.append(int(headers.get("retry-after", "0")))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    return workers, statuses, retry_afters


def test_password_job_bound_is_503_with_retry_after(relay_factory):
    relay = relay_factory("abuse-bound", {"accounts": {"password_jobs_max": 2}})
    status, _, document = register(relay, "busy@example.com")
    assert status == 200, document
    workers, statuses, retry_afters = flood(relay, "busy@example.com", threads=16, duration_s=2.0)
    for thread in workers:
        thread.join()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) > 0 and statuses.count(503) > 0, statuses
    assert retry_afters and min(retry_afters) >= 1, retry_afters


def test_admin_api_answers_within_a_second_during_a_login_flood(relay_factory):
    """16 clients log in as fast as they can (each login is an Argon2id hash on the control
    thread, which also serves the admin API) while `ringctl users list` runs every 100 ms."""
    ringctl = os.environ.get("RINGCTL_BIN")
    if not ringctl:
        pytest.fail("RINGCTL_BIN is not set; run through `tools/zig build test`", pytrace=False)
    relay = relay_factory("abuse-flood")
    status, _, document = register(relay, "flood@example.com")
    assert status == 200, document

    def users_list_s():
        started = time.monotonic()
        completed = subprocess.run([ringctl, "--admin-url", relay.admin_url, "--token", relay.admin_token,
                                    "users", "list"], capture_output=True, text=True, timeout=30)
        elapsed_s = time.monotonic() - started
        assert completed.returncode == 0, completed.stderr
        assert "flood@example.com" in completed.stdout
        return elapsed_s

    idle_s = [users_list_s() for _ in range(5)]
    workers, statuses, _ = flood(relay, "flood@example.com", threads=16, duration_s=6.0)
    latencies_s = []
    time.sleep(0.5)  # let the queue fill
    while any(thread.is_alive() for thread in workers) and len(latencies_s) < 40:
        latencies_s.append(users_list_s())
        time.sleep(0.1)
    for thread in workers:
        thread.join()
    logins = statuses.count(200)
    print(f"\nadmin API latency (ringctl users list, process start included): idle median "
          f"{statistics.median(idle_s) * 1000:.0f} ms; during the login flood {len(latencies_s)} calls, "
          f"median {statistics.median(latencies_s) * 1000:.0f} ms, max {max(latencies_s) * 1000:.0f} ms; "
          f"{logins} logins served ({logins / 6.0:.0f}/s), {statuses.count(503)} refused 503, "
          f"{len(statuses)} attempts")
    assert logins > 0, statuses
    assert len(latencies_s) >= 10
    assert max(latencies_s) < 1.0, latencies_s


# ---------------------------------------------------------------------------
# Connections and large bodies.

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
