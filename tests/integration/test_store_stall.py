"""A store that falls behind never freezes a relay thread.

The relay runs with one thread and a store thread slowed by the test-only hook
RINGWAY_TEST_STORE_DELAY_MS (each write round waits that long while the file
named by RINGWAY_TEST_STORE_DELAY_FILE exists). 5,000 billable requests arrive
on that thread from many connections at once. Meanwhile /healthz on the same
thread must keep answering; requests the relay cannot admit get 503
server_busy with Retry-After; and once the store recovers, every request that
was answered 200 has exactly one usage record, and the wallet moved by exactly
the sum of those records."""
import collections
import json
import os
import threading
import time

from conftest import ManagedProcess, Relay, make_customer
from helpers import RawConnection, chat_json, http_request, raw_request, usage_records

REQUESTS = 5000
CONNECTIONS = 400
STORE_DELAY_MS = 150
HEALTH_PERIOD_S = 0.1
HEALTH_TIMEOUT_S = 2.0
LOAD_DEADLINE_S = 240


class Load:
    """CONNECTIONS keep-alive connections sharing REQUESTS non-streaming chat requests."""

    def __init__(self, relay, key):
        self.relay = relay
        self.key = key
        self.lock = threading.Lock()
        self.remaining = REQUESTS
        self.statuses = collections.Counter()
        self.admitted = set()  # request ids answered 200
        self.refusals = []  # (status, Retry-After, code) of every non-200
        self.errors = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(CONNECTIONS)]
        for thread in self.threads:
            thread.start()

    def take(self):
        with self.lock:
            if self.remaining == 0:
                return False
            self.remaining -= 1
            return True

    def run(self):
        body = chat_json(max_tokens=8)
        headers = {"Authorization": f"Bearer {self.key}"}
        connection = None
        try:
            while self.take():
                if connection is None:
                    connection = RawConnection(self.relay.port, timeout_s=60)
                connection.send(raw_request("POST", "/v1/chat/completions", body, headers))
                response = connection.read_response()
                with self.lock:
                    self.statuses[response.status] += 1
                    if response.status == 200:
                        self.admitted.add(response.header("x-request-id"))
                    else:
                        code = json.loads(response.body)["error"]["code"]
                        self.refusals.append((response.status, response.header("retry-after"), code))
                if response.header("connection") == "close":
                    connection.close()
                    connection = None
        except Exception as error:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append(repr(error))
        finally:
            if connection is not None:
                connection.close()

    def alive(self):
        return any(thread.is_alive() for thread in self.threads)


def test_a_slow_store_never_freezes_the_thread(relay_config_factory, ringway_bin, workdir):
    delay_file = os.path.join(workdir, "store-stall.delay")
    path, text, port = relay_config_factory("store-stall", {
        "server": {"threads": 1},
        "limits": {"connections_per_thread": 4096, "streams_per_thread": 512,
                   "upstream_connections_per_thread": 512},
        "billing": {"store_wait_requests_max": 64, "store_wait_ms": 60000},
    })
    env = dict(os.environ, RINGWAY_TEST_STORE_DELAY_MS=str(STORE_DELAY_MS),
               RINGWAY_TEST_STORE_DELAY_FILE=delay_file)
    process = ManagedProcess("store-stall", [ringway_bin, "--config", path], workdir, env=env)
    admin_line = next(line for line in text.splitlines() if line.startswith("admin_listen"))
    relay = Relay(name="store-stall", url=f"http://127.0.0.1:{port}", port=port, process=process,
                  config_path=path, config_text=text,
                  admin_url="http://" + admin_line.split("=", 1)[1].strip())
    try:
        process.wait_ready(relay.url + "/healthz")
        user_id, key = make_customer(relay, "stall@stall.test", balance="1000.00")
        status, user = relay.admin("GET", f"/admin/users/{user_id}")
        assert status == 200, user
        start_micros = user["balance_micros"]

        with open(delay_file, "w"):
            pass  # the store is slow from here on
        load = Load(relay, key)
        health_latencies = []
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while load.alive() and time.monotonic() < deadline:
            began = time.monotonic()
            status, _, body = http_request(relay.url + "/healthz", timeout_s=HEALTH_TIMEOUT_S)
            health_latencies.append(time.monotonic() - began)
            assert (status, body) == (200, b"ok"), (status, body)
            if len(load.admitted) + len(load.refusals) > REQUESTS // 2 and os.path.exists(delay_file):
                os.unlink(delay_file)  # the store recovers half way through
            time.sleep(HEALTH_PERIOD_S)
        assert not load.alive(), f"the load did not finish in {LOAD_DEADLINE_S} s: {load.statuses}"
        assert not load.errors, load.errors[:5]
        assert sum(load.statuses.values()) == REQUESTS, load.statuses
        assert set(load.statuses) <= {200, 503}, load.statuses
        assert load.statuses[200] > 0 and load.statuses[503] > 0, load.statuses
        for status, retry_after, code in load.refusals:
            assert (status, code) == (503, "server_busy") and retry_after is not None and int(retry_after) >= 1
        assert len(health_latencies) >= 3 and max(health_latencies) < HEALTH_TIMEOUT_S

        # Recovered: every admitted request has exactly one record, the wallet moved by their sum.
        def settled():
            status, user = relay.admin("GET", f"/admin/users/{user_id}")
            return status == 200 and user["available_micros"] == user["balance_micros"]

        deadline = time.monotonic() + 30
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.1)
        records = usage_records(relay, user_id)
        counts = collections.Counter(record["request_id"] for record in records)
        assert all(count == 1 for count in counts.values()), [r for r, c in counts.items() if c > 1][:5]
        assert set(counts) == load.admitted, (len(counts), len(load.admitted))
        status, user = relay.admin("GET", f"/admin/users/{user_id}")
        assert status == 200 and user["available_micros"] == user["balance_micros"], user
        assert start_micros - user["balance_micros"] == sum(record["cost_micros"] for record in records)
    finally:
        if os.path.exists(delay_file):
            os.unlink(delay_file)
        process.stop()
