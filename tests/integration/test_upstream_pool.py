"""The relay's per-thread keep-alive pools of upstream connections: reuse, and the retry
when a pooled connection turns out closed by the upstream."""

import json
import time

import pytest

from conftest import UPSTREAM_API_KEY, ManagedProcess, Upstream, free_port
from helpers import chat_body, http_request


def start_idle_closing_mock(mock_bin, workdir, certs, idle_ms):
    port = free_port()
    argv = [mock_bin, "--listen", f"127.0.0.1:{port}", "--threads", "1", "--tls-cert", certs.server_cert,
            "--tls-key", certs.server_key, "--api-key", UPSTREAM_API_KEY, "--idle-ms", str(idle_ms)]
    process = ManagedProcess(f"mock-idle-{idle_ms}", argv, workdir)
    context = certs.client_context()
    process.wait_ready(f"https://127.0.0.1:{port}/healthz", ssl_context=context)
    return Upstream(url=f"https://127.0.0.1:{port}", port=port, process=process, ssl_context=context)


def mock_stats(upstream):
    status, _, data = http_request(upstream.url + "/mock/stats", ssl_context=upstream.ssl_context)
    assert status == 200, data
    return json.loads(data)


@pytest.fixture(scope="module")
def idle_closing(mock_bin, workdir, certs, relay_factory):
    upstream = start_idle_closing_mock(mock_bin, workdir, certs, idle_ms=300)
    relay = relay_factory("relay-pool", {
        "server": {"threads": 1},
        "upstream idle": {"base_url": upstream.base_url, "api_key": UPSTREAM_API_KEY, "ca_file": certs.ca_cert},
        "model idle-demo": {"upstream": "idle", "upstream_model": "mock-small"},
    })
    yield upstream, relay
    upstream.process.stop()


def post_chat(relay, **kwargs):
    return http_request(relay.url + "/v1/chat/completions", "POST",
                        body=json.dumps(chat_body(model="idle-demo", **kwargs)).encode(),
                        headers={"Content-Type": "application/json", **relay.auth})


def test_sequential_requests_share_one_upstream_connection(idle_closing):
    upstream, relay = idle_closing
    before = mock_stats(upstream)
    for _ in range(200):
        status, _, data = post_chat(relay, mock="chunks=1")
        assert status == 200, data
    after = mock_stats(upstream)
    assert after["requests"] - before["requests"] == 200 + 1  # and our own stats call
    # One relay thread, one request at a time: at most one new TLS connection (plus ours for the stats).
    assert after["connections"] - before["connections"] <= 2


def test_request_on_a_connection_the_upstream_closed_is_retried(idle_closing):
    upstream, relay = idle_closing
    status, _, data = post_chat(relay, mock="chunks=1")
    assert status == 200, data
    before = mock_stats(upstream)
    for _ in range(3):
        time.sleep(0.6)  # the mock closes its idle connections after 300 ms; the relay still pools them
        status, _, data = post_chat(relay, mock="chunks=2")
        assert status == 200, data
        assert json.loads(data)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]
    after = mock_stats(upstream)
    # Each request needed a fresh connection: the stale one was detected and the request sent again.
    assert after["connections"] - before["connections"] >= 3
    assert after["requests"] - before["requests"] == 3 + 1


@pytest.fixture(scope="module")
def patient_relay(relay_factory):
    """The default upstreams with a long first-byte timeout: a stalled head shows as a slow answer."""
    return relay_factory("relay-interim", {"timeouts": {"upstream_first_byte_ms": 20000}})


@pytest.mark.parametrize("model", ["plain-demo", "ringway-demo"], ids=["http", "tls"])
@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
def test_interim_head_in_the_same_read_as_the_final_response(patient_relay, model, streaming):
    """The mock writes `103 Early Hints` and the whole final response in one write (over plain http the relay
    reads them in one receive): the relay parses on past the interim head instead of waiting for bytes that
    never come (which stalled it until the first-byte timeout)."""
    relay = patient_relay
    for _ in range(3):
        started = time.monotonic()
        body = chat_body(model=model, stream=streaming, mock="interim=1;chunks=2")
        status, headers, data = http_request(relay.url + "/v1/chat/completions", "POST",
                                             body=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json", **relay.auth},
                                             timeout_s=15)
        elapsed = time.monotonic() - started
        assert status == 200, data
        assert elapsed < 5, f"the answer took {elapsed:.1f} s: the relay waited past the interim head"
        text = data.decode()
        assert "Early Hints" not in text and "rel=preload" not in text
        if streaming:
            assert text.rstrip().endswith("data: [DONE]"), text[-200:]
        else:
            assert json.loads(text)["choices"][0]["message"]["content"], text
