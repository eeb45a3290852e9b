"""The durability promise (issue 4): a kill -9 at any moment loses no settled charge and no usage
record of a request whose response completed, and holds left open by the crash are resolved at
restart.

A relay on its own data dir serves streaming load from several threads; each thread records the
x-request-id of every response it received in full (data: [DONE] and the end of the chunked
body). The relay is killed with SIGKILL at a seeded random moment, restarted on the same data dir
and config, and then:
  - every completed request id has exactly one usage record, with the exact tokens and cost of
    what the mock reported, and no request id is billed twice;
  - start balance - balance == sum of every usage record's cost, exactly, and no hold is left
    (available == settled balance), in memory and on disk;
  - holds open at the kill were resolved ("resolved N holds" on the restarted relay's stderr);
  - the restarted relay bills the next request exactly.
Three kills, at three different moments, on the same data dir; the checks are cumulative."""

import collections
import json
import random
import re
import signal
import threading
import time

import pytest

from conftest import ManagedProcess, make_customer
from helpers import (PeerClosed, RawConnection, decode_chunk_events, http_request, parse_sse, raw_request,
                     usage_records)

PRICES = {"input_price": "0.75", "cached_input_price": "0.375", "output_price": "3.333333", "request_price": "0.000007"}
UPSTREAM_MODEL = "mock-small"
START_BALANCE = "100.00"
LOAD_THREADS = 6
KILLS = 3
SEED = 20261123


def money_micros(text):
    units, _, fraction = text.partition(".")
    return int(units) * 1_000_000 + int((fraction + "000000")[:6])


def cost_micros(prompt_tokens, completion_tokens):
    exact = prompt_tokens * money_micros(PRICES["input_price"]) + \
        completion_tokens * money_micros(PRICES["output_price"])
    return -(-exact // 1_000_000) + money_micros(PRICES["request_price"])


def stream_body(chunks, gap_ms, serial):
    """A streaming request that names max_tokens and include_usage, so the relay changes only the model."""
    return json.dumps({"model": "ringway-demo", "stream": True, "stream_options": {"include_usage": True},
                       "max_tokens": 64, "messages": [{"role": "user", "content": f"load {serial}"}],
                       "mock": f"chunks={chunks};gap_ms={gap_ms}"}, separators=(",", ":")).encode()


def expected_usage(body):
    """(prompt, completion) the mock reports: received bytes / 4 + 1, and the chunk count."""
    received = len(body) - len("ringway-demo") + len(UPSTREAM_MODEL)
    chunks = int(re.search(rb"chunks=(\d+)", body).group(1))
    return received // 4 + 1, chunks


class Load:
    """Streaming requests from LOAD_THREADS threads until stop(); completed: request id -> body."""

    def __init__(self, relay, key, seed):
        self.relay = relay
        self.key = key
        self.completed = {}
        self.started = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(random.Random(seed * 100 + index), index))
                        for index in range(LOAD_THREADS)]
        for thread in self.threads:
            thread.start()

    def run(self, rng, index):
        serial = 0
        connection = None
        while not self.stopping.is_set():
            serial += 1
            body = stream_body(chunks=rng.randint(1, 12), gap_ms=rng.choice((0, 2, 5, 10)),
                               serial=f"{index}-{serial}")
            try:
                if connection is None:
                    connection = RawConnection(self.relay.port, timeout_s=5.0)
                connection.send(raw_request("POST", "/v1/chat/completions", body,
                                            {"Authorization": f"Bearer {self.key}"}))
                with self.lock:
                    self.started += 1
                head = connection.read_head()
                request_id = head.header("x-request-id")
                payload = b"".join(connection.iter_body(head))  # returns only at the chunked terminator
            except (OSError, PeerClosed, ValueError, AssertionError):
                if connection is not None:
                    connection.close()
                connection = None
                if self.stopping.is_set():
                    return
                time.sleep(0.01)  # the relay is down: wait for the test to stop us
                continue
            assert head.status == 200, (head.status, payload)
            events, problems = parse_sse(payload)
            _, saw_done = decode_chunk_events(events)
            assert not problems and saw_done, (problems, payload[-200:])
            with self.lock:
                self.completed[request_id] = body
        if connection is not None:
            connection.close()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), "a load thread did not stop"


def balance_of(relay, key):
    status, _, data = http_request(relay.url + "/billing/balance", headers={"Authorization": f"Bearer {key}"})
    assert status == 200, data
    return json.loads(data)["balance"]


def check_ledger(relay, user_id, key, completed, start):
    """The invariant after a restart: every completed response billed exactly once and exactly;
    the balance decrease is the sum of the records' costs; no hold left. Returns the records."""
    records = usage_records(relay, user_id)
    counts = collections.Counter(record["request_id"] for record in records)
    twice = {request_id: count for request_id, count in counts.items() if count > 1}
    assert not twice, f"request ids with more than one usage record: {twice}"
    missing = sorted(set(completed) - set(counts))
    assert not missing, f"{len(missing)} completed responses have no usage record after kill -9: {missing[:5]}"
    by_id = {record["request_id"]: record for record in records}
    for request_id, body in completed.items():
        record = by_id[request_id]
        prompt, completion = expected_usage(body)
        assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion), record
        assert record["cost_micros"] == cost_micros(prompt, completion), record
        assert record["status"] == "completed" and not record["estimated"] and not record["capped"], record
    status, user = relay.admin("GET", f"/admin/users/{user_id}")
    assert status == 200, user
    spent = sum(record["cost_micros"] for record in records)
    assert start - user["balance_micros"] == spent, (start, user, spent)
    assert user["available_micros"] == user["balance_micros"], f"a hold survived the restart: {user}"
    assert balance_of(relay, key) == start - spent
    return records


def restart(relay, ringway_bin, workdir, name):
    process = ManagedProcess(name, [ringway_bin, "--config", relay.config_path], workdir)
    relay.process = process  # the factory stops the latest process at the end of the session
    process.wait_ready(relay.url + "/healthz")
    return process


@pytest.mark.parametrize("hold_record_after_ms", [0, 60000], ids=["holds-recorded", "holds-unrecorded"])
def test_kill_9_during_streaming_load_loses_no_completed_charge(relay_factory, ringway_bin, workdir,
                                                                hold_record_after_ms):
    """With every hold recorded at once, restarts resolve the holds the kill left open; with holds
    recorded only after a minute (none of these streams lasts that long) nothing is left to resolve,
    and either way every completed response is billed exactly once."""
    relay = relay_factory(f"crash-{hold_record_after_ms}",
                          {"model ringway-demo": dict(PRICES), "billing": {"hold_record_after_ms": hold_record_after_ms}})
    user_id, key = make_customer(relay, "crash@crash.test", balance=START_BALANCE)
    start = money_micros(START_BALANCE)
    rng = random.Random(SEED)
    completed = {}
    resolved_reports = []
    for kill in range(KILLS):
        delay_s = rng.uniform(0.15, 1.0)
        load = Load(relay, key, seed=SEED + kill)
        time.sleep(delay_s)
        relay.process.signal(signal.SIGKILL)
        assert relay.process.wait(5) == -signal.SIGKILL
        load.stop()
        assert len(load.completed) > 0, f"no request completed in {delay_s:.2f} s before kill {kill}"
        # Sent but not received in full: the requests whose holds may have been open at the kill.
        unfinished = load.started - len(load.completed)
        completed.update(load.completed)

        process = restart(relay, ringway_bin, workdir, f"crash-{hold_record_after_ms}-restart-{kill}")
        stderr = process.stderr_text()
        match = re.search(r"resolved (\d+) holds left open by the last run \((\d+) settled, (\d+) released\)",
                          stderr)
        if match:
            total, settled, released = (int(group) for group in match.groups())
            assert total == settled + released and 0 < total <= min(unfinished, LOAD_THREADS), (unfinished, stderr)
            resolved_reports.append(total)
        check_ledger(relay, user_id, key, completed, start)

    if hold_record_after_ms == 0:
        # Six threads mid-stream at every kill: at least one restart found open holds to resolve.
        assert resolved_reports, "no restart reported resolved holds"
    else:
        assert not resolved_reports, "a hold younger than hold_record_after_ms was recorded"

    # The restarted relay bills the next request exactly.
    before = balance_of(relay, key)
    body = stream_body(chunks=4, gap_ms=0, serial="after")
    with RawConnection(relay.port) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {key}"}))
        head = connection.read_head()
        payload = b"".join(connection.iter_body(head))
    assert head.status == 200 and b"data: [DONE]" in payload
    completed[head.header("x-request-id")] = body
    records = check_ledger(relay, user_id, key, completed, start)
    assert before - balance_of(relay, key) == cost_micros(*expected_usage(body))
    assert len(records) >= len(completed)
