"""Regression tests for relay bugs found while writing issue 4's billing tests: [DONE] was
forwarded before the usage record was written; n > 1 without max_tokens was refused though
affordable; session-token refusals repeated their sentences."""

import json
import time

import openai
import pytest

import test_accounts
from test_accounts import call, jwt_refusals, login, register
from test_billing import MESSAGES, PRICES, billing_overrides, ceil_div, counted_mock, customer, hold_micros, post  # noqa: F401


@pytest.fixture(scope="module")
def accounts_relay(relay_factory):
    return relay_factory("bugs-accounts", {"auth": {"jwt_secret": test_accounts.JWT_SECRET},
                                           "model ringway-demo": test_accounts.PRICES})


@pytest.fixture(scope="module")
def account(accounts_relay):
    status, _, registered = register(accounts_relay, "bugs@example.com")
    assert status == 200, registered
    status, _, logged_in = login(accounts_relay, "bugs@example.com")
    assert status == 200, logged_in
    return registered, logged_in["token"]


@pytest.fixture(scope="module")
def billing_relay(relay_factory, counted_mock):
    return relay_factory("bugs-billing", billing_overrides(counted_mock))


def test_usage_record_exists_when_the_sdk_sees_the_end_of_the_stream(accounts_relay, account):
    """Bug 1: the relay forwards `data: [DONE]` before the settlement is written and holds back only
    the chunked terminator. The openai SDK stops reading at [DONE], so a client that just finished a
    stream can list its usage without the request (and a kill -9 in that window loses the record of
    a response the SDK received in full)."""
    registered, token = account
    missing = []
    with openai.OpenAI(base_url=accounts_relay.url + "/v1", api_key=registered["api_key"], max_retries=0,
                       timeout=30) as sdk:
        for _ in range(150):
            stream = sdk.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=True,
                                                 max_tokens=8, extra_body={"mock": "chunks=2"})
            request_id = stream.response.headers["x-request-id"]
            list(stream)
            status, _, listing = call(accounts_relay.url + "/billing/usage?limit=1", token=token)
            assert status == 200, listing
            if listing["data"][0]["request_id"] != request_id:
                missing.append(request_id)
    assert not missing, f"{len(missing)} of 150 streams ended (for the SDK) before their usage record existed"


def test_n2_without_max_tokens_gets_the_largest_affordable_max_tokens(billing_relay):
    """Bug 2: with n > 1 and no max_tokens, relay_admit computes the affordable max_tokens with
    prompt_bound × n and ONE completion, but reserves ledger_hold(prompt_bound, max_tokens × n):
    the hold exceeds the wallet and the request gets 402 although a smaller max_tokens fits."""
    body = json.dumps({"model": "ringway-demo", "n": 2, "messages": MESSAGES, "mock": "echo=1;chunks=1"},
                      separators=(",", ":")).encode()
    balance = ceil_div(len(body) * 2_000_000 + 2 * 37 * 8_000_000, 1_000_000)  # pays for 2 × 37 tokens
    _, key, _ = customer(billing_relay, f"0.{balance:06d}")
    expected = max(m for m in range(1, 4097) if hold_micros(PRICES, len(body), 2 * m) <= balance)
    status, _, data = post(billing_relay, body, key)
    assert status == 200, data
    received = json.loads(json.loads(data)["choices"][0]["message"]["content"])
    assert received["max_tokens"] == expected


def test_session_token_refusals_say_it_once(accounts_relay, account):
    """Bug 3 (cosmetic): accounts_user_from_jwt wraps jwt_result_message(), which already starts with
    "Invalid session token:" and ends with "Log in again with POST /auth/login.", in the same words."""
    for kind, token in jwt_refusals(accounts_relay, account).items():
        if token is None:
            continue
        status, _, document = call(accounts_relay.url + "/api-keys", token=token)
        message = document["error"]["message"]
        assert status == 401
        assert message.count("Invalid session token") <= 1 and message.count("Log in again") == 1, (kind, message)
        assert ".." not in message, (kind, message)
