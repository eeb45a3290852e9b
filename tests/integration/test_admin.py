"""The admin API (control thread, admin_listen) and the account endpoints it serves as jobs, end to end
against the real relay: every admin endpoint with good and bad input, their effect on the data plane
(the OpenAI SDK sees the key and wallet changes at once), the audit log, the usage export shapes, the
first-start bootstrap, and persistence across a restart."""

import csv
import hashlib
import io
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import ManagedProcess, make_customer
from helpers import chat_body

PRICED = {"model plain-demo": {"input_price": "1.00", "output_price": "2.00"}}


def call(url, method="GET", body=None, token=None, raw=None):
    """One HTTP request; returns (status, headers, body bytes). body: a dict sent as JSON, or raw bytes."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def admin(relay, method, path, body=None, raw=None, token=None):
    status, headers, payload = call(relay.admin_url + path, method, body, token or relay.admin_token, raw)
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def assert_error(status, payload, expected_status, code=None):
    assert status == expected_status, payload
    assert set(payload["error"]) == {"message", "type", "param", "code"}, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    if code is not None:
        assert payload["error"]["code"] == code, payload


@pytest.fixture(scope="module")
def relay(relay_factory):
    """A relay of its own (so counts and balances here are exact), with priced plain-demo."""
    return relay_factory("admin-api", PRICED)


def new_user(relay, email, balance="1.00", **extra):
    status, user = admin(relay, "POST", "/admin/users", dict(email=email, balance=balance, **extra))
    assert status == 201, user
    return user


def new_key(relay, user_id, **fields):
    status, key = admin(relay, "POST", "/admin/keys", dict(user_id=user_id, **fields))
    assert status == 201, key
    return key


def chat(relay, key, model="plain-demo", **kwargs):
    with openai.OpenAI(base_url=relay.url + "/v1", api_key=key, max_retries=0, timeout=30) as sdk:
        return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **kwargs)


# ---------------------------------------------------------------------------
# Authentication of the admin API.


def test_admin_token_required(relay):
    status, _, payload = call(relay.admin_url + "/admin/users")
    assert_error(status, json.loads(payload), 401, "invalid_admin_token")
    status, _, payload = call(relay.admin_url + "/admin/users", token="not-the-admin-token")
    assert_error(status, json.loads(payload), 401, "invalid_admin_token")
    status, _, payload = call(relay.admin_url + "/admin/users", token=relay.admin_token[:-1])
    assert status == 401
    # A customer's API key is not an admin token.
    status, _, payload = call(relay.admin_url + "/admin/users", token=relay.api_key)
    assert status == 401


def test_admin_api_is_not_on_the_data_port(relay):
    status, _, _ = call(relay.url + "/admin/users", token=relay.admin_token)
    assert status in (401, 404)


def test_unknown_paths_and_methods(relay):
    assert_error(*admin(relay, "GET", "/admin/nothing"), 404, "not_found")
    assert_error(*admin(relay, "GET", "/admin/users/1/keys/2"), 404)
    assert_error(*admin(relay, "DELETE", "/admin/users"), 405, "method_not_allowed")
    assert_error(*admin(relay, "GET", "/admin/keys/1/disable"), 405)
    assert_error(*admin(relay, "PUT", "/admin/usage"), 405)


def test_admin_disabled_without_token(relay_config_factory, ringway_bin, workdir):
    path, text, port = relay_config_factory("admin-off", {"auth": {"admin_token": None}})
    admin_url = "http://" + next(line for line in text.splitlines() if line.startswith("admin_listen")).split("=")[1].strip()
    process = ManagedProcess("admin-off", [ringway_bin, "--config", path], workdir)
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 5
        while True:
            try:
                status, _, payload = call(admin_url + "/admin/users", token="anything-at-all-here")
                break
            except OSError:
                assert time.monotonic() < deadline, "the admin listener never answered"
                time.sleep(0.05)
        payload = json.loads(payload)
        assert_error(status, payload, 403, "admin_disabled")
        assert payload["error"]["message"] == "the admin API is disabled: set admin_token"
        assert "admin_token" in process.stderr_text()
    finally:
        process.stop()


# ---------------------------------------------------------------------------
# Users.


def test_bootstrap_created_the_admin_account(relay):
    status, user = admin(relay, "GET", "/admin/users/1")
    assert status == 200, user
    assert user["email"] == "admin@ringway.local"
    assert user["has_password"] is False
    stderr = relay.process.stderr_text()
    assert "first start: created the admin account admin@ringway.local (user 1" in stderr
    assert f"ringctl --config {relay.config_path} keys create --user 1" in stderr


def test_users_create_list_show(relay):
    user = new_user(relay, "Dana@Example.COM", balance="12.345678", password="correct horse battery")
    assert user["email"] == "dana@example.com"
    assert user["balance_micros"] == 12345678 and user["balance"] == "12.345678"
    assert user["available_micros"] == 12345678
    assert user["status"] == "active" and user["has_password"] is True
    assert "password" not in json.dumps(user).replace("has_password", "")

    status, shown = admin(relay, "GET", f"/admin/users/{user['id']}")
    assert status == 200 and shown["email"] == "dana@example.com" and shown["keys"] == []

    status, listing = admin(relay, "GET", "/admin/users?limit=1000")
    assert status == 200 and listing["object"] == "list" and listing["has_more"] is False
    assert user["id"] in [entry["id"] for entry in listing["data"]]
    status, page = admin(relay, "GET", "/admin/users?limit=1")
    assert status == 200 and len(page["data"]) == 1 and page["has_more"] is True
    status, next_page = admin(relay, "GET", f"/admin/users?limit=1&after={page['data'][0]['id']}")
    assert next_page["data"][0]["id"] > page["data"][0]["id"]

    # Without a balance: the configured free grant (1.00).
    assert new_user(relay, "erin@example.com", balance=None)["balance_micros"] == 1000000


@pytest.mark.parametrize("body, code", [
    ({"email": "dana@example.com"}, "email_taken"),
    ({"email": "DANA@example.com"}, "email_taken"),
    ({"email": "no-at-sign"}, "invalid_email"),
    ({"email": "a b@example.com"}, "invalid_email"),
    ({"email": 7}, "invalid_type"),
    ({}, "invalid_email"),
    ({"email": "f@example.com", "password": "short"}, "invalid_password"),
    ({"email": "f@example.com", "balance": "1.2345678"}, "invalid_amount"),
    ({"email": "f@example.com", "balance": "-5"}, "invalid_amount"),
    ({"email": "f@example.com", "balance": "1e3"}, "invalid_amount"),
    ({"email": "f@example.com", "balance": 5}, "invalid_type"),
])
def test_users_create_bad_input(relay, body, code):
    status, payload = admin(relay, "POST", "/admin/users", body)
    assert_error(status, payload, 409 if code == "email_taken" else 400, code)


def test_users_create_bad_json(relay):
    assert_error(*admin(relay, "POST", "/admin/users", raw=b"{\"email\":"), 400, "invalid_json")
    assert_error(*admin(relay, "POST", "/admin/users", raw=b"[1,2]"), 400, "invalid_json")
    assert_error(*admin(relay, "POST", "/admin/users", raw=b"{\"email\":\"a@b.co\",\"email\":\"c@d.co\"}"), 400,
                 "duplicate_member")


def test_unknown_user(relay):
    for path in ("/admin/users/999999", "/admin/users/0", "/admin/users/abc", "/admin/users/-1"):
        assert_error(*admin(relay, "GET", path), 404, "user_not_found")
    assert_error(*admin(relay, "POST", "/admin/users/999999/suspend"), 404, "user_not_found")
    assert_error(*admin(relay, "POST", "/admin/users/999999/balance", {"op": "top_up", "amount": "1"}), 404)
    assert_error(*admin(relay, "POST", "/admin/keys", {"user_id": 999999}), 404, "user_not_found")
    assert_error(*admin(relay, "GET", "/admin/keys?user_id=999999"), 404)
    assert_error(*admin(relay, "GET", "/admin/usage?user_id=999999"), 404)


# ---------------------------------------------------------------------------
# Keys, and what the data plane makes of them.


def test_key_create_and_list(relay):
    user = new_user(relay, "keys@example.com", balance="5")
    key = new_key(relay, user["id"], name="ci runner", models=["plain-demo"], tier="gold",
                  limits={"requests_per_minute": 50, "concurrent_requests": 0}, token_quota=1000000,
                  expires_at="2099-12-31T23:59:59Z", spend_cap="2.50")
    assert key["key"].startswith("sk-") and len(key["key"]) == 46
    assert key["masked_key"] == key["key"][:11] + "..." + key["key"][-4:]
    assert key["name"] == "ci runner" and key["user_id"] == user["id"] and key["status"] == "active"
    assert key["models"] == ["plain-demo"] and key["tier"] == "gold"
    assert key["limits"] == {"requests_per_minute": 50, "tokens_per_minute": None, "requests_per_day": None,
                             "tokens_per_day": None, "concurrent_requests": 0}
    assert key["token_quota"] == 1000000 and key["tokens_used"] == 0
    assert key["spend_cap_micros"] == 2500000 and key["spend_cap"] == "2.500000"
    assert key["expires_at"] == "2099-12-31T23:59:59.000Z" and key["expires_at_ms"] == 4102444799000
    assert key["spent_micros"] == 0

    status, listing = admin(relay, "GET", f"/admin/keys?user_id={user['id']}")
    assert status == 200 and [entry["id"] for entry in listing["data"]] == [key["id"]]
    assert key["key"] not in json.dumps(listing), "a listing must never show the full key"
    status, shown = admin(relay, "GET", f"/admin/keys/{key['id']}")
    assert status == 200 and "key" not in shown and shown["masked_key"] == key["masked_key"]
    status, everything = admin(relay, "GET", "/admin/keys?limit=1000")
    assert key["id"] in [entry["id"] for entry in everything["data"]]

    # The key works at once, for its model only.
    assert chat(relay, key["key"]).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(relay, key["key"], model="ringway-demo")
    assert refused.value.status_code == 403 and refused.value.code == "model_not_allowed"


@pytest.mark.parametrize("fields, code", [
    ({"models": ["no-such-model"]}, "model_not_found"),
    ({"models": ["plain-demo", "plain-demo"]}, "invalid_value"),
    ({"models": []}, "invalid_value"),
    ({"models": "plain-demo"}, "invalid_type"),
    ({"tier": -1}, "invalid_value"),
    ({"tier": 7}, "invalid_value"),
    ({"tier": "platinum"}, "invalid_value"),
    ({"limits": 5}, "invalid_type"),
    ({"limits": {"requests_per_minute": -1}}, "invalid_type"),
    ({"limits": {"requests_per_minute": 4294967295}}, "invalid_type"),
    ({"limits": {"tokens_per_day": "many"}}, "invalid_type"),
    ({"token_quota": -5}, "invalid_type"),
    ({"expires_at": "tomorrow"}, "invalid_type"),
    ({"expires_at": "2026-02-30"}, "invalid_type"),
    ({"spend_cap": "a lot"}, "invalid_amount"),
    ({"spend_cap": 3}, "invalid_type"),
    ({"name": ""}, "invalid_name"),
    ({"name": "x" * 64}, "invalid_name"),
    ({"name": "bell\u0007"}, "invalid_name"),
])
def test_key_create_bad_input(relay, fields, code):
    status, payload = admin(relay, "POST", "/admin/keys", dict(user_id=1, **fields))
    assert_error(status, payload, 400, code)


def test_key_create_needs_user(relay):
    assert_error(*admin(relay, "POST", "/admin/keys", {}), 400, "missing_member")
    assert_error(*admin(relay, "POST", "/admin/keys", {"user_id": "1"}), 400, "invalid_type")


def test_key_disable_enable_and_patch_reach_the_data_plane(relay):
    user = new_user(relay, "patch@example.com", balance="5")
    key = new_key(relay, user["id"])
    assert key["models"] is None and key["spend_cap"] is None and key["expires_at"] is None
    chat(relay, key["key"])

    status, disabled = admin(relay, "POST", f"/admin/keys/{key['id']}/disable")
    assert status == 200 and disabled["status"] == "disabled"
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(relay, key["key"])
    assert "disabled" in refused.value.message
    status, enabled = admin(relay, "POST", f"/admin/keys/{key['id']}/enable")
    assert status == 200 and enabled["status"] == "active"
    chat(relay, key["key"])

    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"models": ["ringway-demo"], "tier": "silver"})
    assert status == 200 and patched["models"] == ["ringway-demo"] and patched["tier"] == "silver"
    # One limit changes, the others keep theirs; null gives a limit back to the tier.
    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"limits": {"requests_per_day": 7}})
    assert status == 200 and patched["limits"]["requests_per_day"] == 7
    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}",
                            {"limits": {"requests_per_day": None}, "tier": None, "token_quota": None})
    assert status == 200 and patched["limits"]["requests_per_day"] is None and patched["tier"] is None
    assert patched["token_quota"] is None
    with pytest.raises(openai.PermissionDeniedError):
        chat(relay, key["key"])
    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"models": None})
    assert status == 200 and patched["models"] is None
    chat(relay, key["key"])

    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"expires_at": 1000})
    assert status == 200 and patched["expired"] is True
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(relay, key["key"])
    assert "expired" in refused.value.message
    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"expires_at": None})
    assert status == 200 and patched["expired"] is False and patched["expires_at"] is None
    chat(relay, key["key"])

    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"spend_cap": "0.000001"})
    assert status == 200 and patched["spend_cap_micros"] == 1
    with pytest.raises(openai.APIStatusError) as refused:
        chat(relay, key["key"])
    assert refused.value.status_code == 402
    status, patched = admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"spend_cap": None})
    assert status == 200 and patched["spend_cap"] is None
    chat(relay, key["key"])

    assert_error(*admin(relay, "PATCH", f"/admin/keys/{key['id']}", {}), 400, "nothing_to_change")
    assert_error(*admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"tier": "high"}), 400, "invalid_value")
    assert_error(*admin(relay, "PATCH", "/admin/keys/999999", {"tier": "gold"}), 404, "key_not_found")
    assert_error(*admin(relay, "POST", "/admin/keys/999999/disable"), 404, "key_not_found")
    assert_error(*admin(relay, "POST", "/admin/keys/abc/enable"), 404, "key_not_found")


# ---------------------------------------------------------------------------
# Balances.


def balance_of(relay, key):
    status, _, payload = call(relay.url + "/billing/balance", token=key)
    assert status == 200, payload
    return json.loads(payload)["balance"]


def test_top_up_and_deduct(relay):
    user = new_user(relay, "wallet@example.com", balance="1.00")
    key = new_key(relay, user["id"])["key"]
    status, after = admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "top_up", "amount": "2.50"})
    assert status == 200 and after["balance_micros"] == 3500000 and after["available_micros"] == 3500000
    assert balance_of(relay, key) == 3500000
    status, after = admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "deduct", "amount": "0.000001"})
    assert status == 200 and after["balance_micros"] == 3499999
    assert balance_of(relay, key) == 3499999

    # Never below zero: refused, nothing changed.
    status, payload = admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "deduct", "amount": "3.5"})
    assert_error(status, payload, 409, "insufficient_balance")
    assert balance_of(relay, key) == 3499999
    status, after = admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "deduct", "amount": "3.499999"})
    assert status == 200 and after["balance_micros"] == 0 and after["available_micros"] == 0
    with pytest.raises(openai.APIStatusError) as refused:
        chat(relay, key)
    assert refused.value.status_code == 402 and refused.value.code == "insufficient_quota"


@pytest.mark.parametrize("body, code", [
    ({"op": "top_up", "amount": "abc"}, "invalid_amount"),
    ({"op": "top_up", "amount": "1.0000001"}, "invalid_amount"),
    ({"op": "top_up", "amount": "-1"}, "invalid_amount"),
    ({"op": "top_up", "amount": "0"}, "invalid_amount"),
    ({"op": "top_up", "amount": "1000000001"}, "invalid_amount"),
    ({"op": "top_up", "amount": 1}, "invalid_type"),
    ({"op": "top_up"}, "invalid_amount"),
    ({"op": "steal", "amount": "1"}, "invalid_value"),
    ({"amount": "1"}, "invalid_value"),
])
def test_balance_bad_input(relay, body, code):
    status, payload = admin(relay, "POST", "/admin/users/1/balance", body)
    assert_error(status, payload, 400, code)


def test_suspend_and_resume(relay):
    user = new_user(relay, "suspend@example.com", balance="1.00")
    key = new_key(relay, user["id"])["key"]
    status, after = admin(relay, "POST", f"/admin/users/{user['id']}/suspend")
    assert status == 200 and after["status"] == "suspended"
    with pytest.raises(openai.APIStatusError) as refused:
        chat(relay, key)
    assert refused.value.status_code == 402 and refused.value.code == "wallet_suspended"
    status, after = admin(relay, "POST", f"/admin/users/{user['id']}/resume")
    assert status == 200 and after["status"] == "active"
    chat(relay, key)


# ---------------------------------------------------------------------------
# The audit log.


def test_every_change_is_audited(relay):
    user = new_user(relay, "audited@example.com", balance="1.00")
    key = new_key(relay, user["id"])
    admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "top_up", "amount": "1"})
    admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "deduct", "amount": "0.5"})
    admin(relay, "POST", f"/admin/users/{user['id']}/suspend")
    admin(relay, "POST", f"/admin/users/{user['id']}/resume")
    admin(relay, "POST", f"/admin/keys/{key['id']}/disable")
    admin(relay, "POST", f"/admin/keys/{key['id']}/enable")
    admin(relay, "PATCH", f"/admin/keys/{key['id']}", {"tier": "bronze"})
    # A refused change leaves no entry.
    admin(relay, "POST", f"/admin/users/{user['id']}/balance", {"op": "deduct", "amount": "100"})

    status, audit = admin(relay, "GET", "/admin/audit?limit=9")
    assert status == 200 and audit["object"] == "list" and len(audit["data"]) == 9
    fingerprint = hashlib.sha256(relay.admin_token.encode()).hexdigest()[:12]
    expected = [("key.update", f"key:{key['id']}"), ("key.enable", f"key:{key['id']}"),
                ("key.disable", f"key:{key['id']}"), ("user.resume", f"user:{user['id']}"),
                ("user.suspend", f"user:{user['id']}"), ("balance.deduct", f"user:{user['id']}"),
                ("balance.top_up", f"user:{user['id']}"), ("key.create", f"key:{key['id']}"),
                ("user.create", f"user:{user['id']}")]
    assert [(entry["action"], entry["target"]) for entry in audit["data"]] == expected
    for entry in audit["data"]:
        assert entry["admin"] == fingerprint
        assert entry["time_ms"] > 1700000000000
    ids = [entry["id"] for entry in audit["data"]]
    assert ids == sorted(ids, reverse=True)
    deduct = json.loads(audit["data"][5]["details"])
    assert deduct == {"amount": "0.500000", "balance_after": "1.500000"}
    assert relay.admin_token not in json.dumps(audit)
    assert_error(*admin(relay, "GET", "/admin/audit?limit=x"), 400, "invalid_parameter")


# ---------------------------------------------------------------------------
# Usage: export shapes, filters, and the ledger invariant.


USAGE_FIELDS = {"id", "request_id", "key_id", "user_id", "model", "upstream", "prompt_tokens", "completion_tokens",
                "cached_tokens", "reasoning_tokens", "cost_micros", "status", "latency_ms", "created_ms", "estimated",
                "capped", "attempts"}


@pytest.fixture(scope="module")
def spender(relay):
    """A user who made 6 priced requests with two keys; returns (user, key_a, key_b, start balance)."""
    user = new_user(relay, "spender@example.com", balance="10.00")
    key_a = new_key(relay, user["id"], name="a")
    key_b = new_key(relay, user["id"], name="b")
    for index in range(4):
        chat(relay, key_a["key"], extra_body={"mock": "chunks=3"})
    for index in range(2):
        with openai.OpenAI(base_url=relay.url + "/v1", api_key=key_b["key"], max_retries=0, timeout=30) as sdk:
            stream = sdk.chat.completions.create(model="plain-demo", messages=[{"role": "user", "content": "x" * 40}],
                                                 stream=True)
            assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    return user, key_a, key_b, 10000000


def export(relay, query):
    status, headers, payload = call(relay.admin_url + "/admin/usage?" + query, token=relay.admin_token)
    return status, headers, payload


def test_usage_costs_add_up_to_the_balance_decrease(relay, spender):
    user, key_a, key_b, start = spender
    status, _, payload = export(relay, f"user_id={user['id']}&format=json")
    assert status == 200
    records = json.loads(payload)
    assert len(records) == 6
    assert all(record["cost_micros"] > 0 for record in records)
    status, shown = admin(relay, "GET", f"/admin/users/{user['id']}")
    assert start - shown["balance_micros"] == sum(record["cost_micros"] for record in records)
    assert shown["available_micros"] == shown["balance_micros"]
    # Key spending adds up per key.
    spent = {entry["id"]: entry["spent_micros"] for entry in shown["keys"]}
    for key in (key_a, key_b):
        assert spent[key["id"]] == sum(r["cost_micros"] for r in records if r["key_id"] == key["id"])


def test_usage_export_json(relay, spender):
    user, key_a, key_b, _ = spender
    status, headers, payload = export(relay, f"user_id={user['id']}")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    records = json.loads(payload)
    assert isinstance(records, list) and len(records) == 6
    for record in records:
        assert set(record) == USAGE_FIELDS
        assert record["user_id"] == user["id"] and record["model"] == "plain-demo"
        assert record["status"] == "completed"
    ids = [record["id"] for record in records]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert [r["key_id"] for r in records[:2]] == [key_b["id"]] * 2


def test_usage_export_jsonl_and_filters(relay, spender):
    user, key_a, key_b, _ = spender
    status, headers, payload = export(relay, f"key_id={key_a['id']}&format=jsonl")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    lines = payload.decode().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 4 and all(record["key_id"] == key_a["id"] for record in records)
    assert all(set(record) == USAGE_FIELDS for record in records)

    status, _, payload = export(relay, f"user_id={user['id']}&format=jsonl&limit=2")
    assert status == 200 and len(payload.decode().splitlines()) == 2

    newest = records[0]["created_ms"]
    status, _, payload = export(relay, f"key_id={key_a['id']}&format=jsonl&from={newest}")
    assert status == 200 and len(payload.decode().splitlines()) >= 1
    assert all(json.loads(line)["created_ms"] >= newest for line in payload.decode().splitlines())
    status, _, payload = export(relay, f"key_id={key_a['id']}&format=jsonl&to={records[-1]['created_ms']}")
    assert payload == b"", "to is exclusive"
    status, _, payload = export(relay, "format=jsonl&from=2099-01-01")
    assert status == 200 and payload == b""
    status, _, payload = export(relay, "format=json&from=2099-01-01T00:00:00Z")
    assert status == 200 and json.loads(payload) == []


def test_usage_export_csv(relay, spender):
    user, key_a, key_b, _ = spender
    status, headers, payload = export(relay, f"user_id={user['id']}&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    text = payload.decode()
    assert text.endswith("\r\n") and "\r\n" in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["id", "created_ms", "created", "request_id", "user_id", "key_id", "model", "upstream",
                       "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_micros",
                       "cost", "status", "latency_ms", "estimated", "capped", "attempts"]
    assert len(rows) == 7
    status, _, payload = export(relay, f"user_id={user['id']}&format=json")
    by_id = {record["id"]: record for record in json.loads(payload)}
    for row in rows[1:]:
        record = by_id[int(row[0])]
        assert int(row[12]) == record["cost_micros"]
        assert row[13] == f"{record['cost_micros'] // 1000000}.{record['cost_micros'] % 1000000:06d}"
        assert row[3] == record["request_id"] and int(row[5]) == record["key_id"]
        assert row[2].endswith("Z") and row[2][:4].isdigit()


@pytest.mark.parametrize("query, status, code", [
    ("format=xml", 400, "invalid_parameter"),
    ("from=yesterday", 400, "invalid_parameter"),
    ("to=2026-13-01", 400, "invalid_parameter"),
    ("from=2026-01-02&to=2026-01-01", 400, "invalid_parameter"),
    ("limit=-1", 400, "invalid_parameter"),
    ("user_id=abc", 400, "invalid_parameter"),
    ("user_id=999999", 404, "user_not_found"),
    ("key_id=999999", 404, "key_not_found"),
])
def test_usage_export_bad_input(relay, query, status, code):
    got, _, payload = export(relay, query)
    assert_error(got, json.loads(payload), status, code)


def test_usage_key_of_another_user(relay, spender):
    user, key_a, _, _ = spender
    got, _, payload = export(relay, f"user_id=1&key_id={key_a['id']}")
    assert_error(got, json.loads(payload), 400, "invalid_parameter")


BULK_REQUESTS = 1200  # about twice what one 256 KiB export page holds


def test_large_export_streams_every_record_once(relay):
    """More records than one export page: the answer is chunked and still has each record exactly once."""
    user = new_user(relay, "bulk@example.com", balance="100")
    key = new_key(relay, user["id"])["key"]
    import concurrent.futures
    import http.client

    body = json.dumps(chat_body(model="plain-demo", mock="chunks=1")).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    threads = 8

    def many(_):
        """BULK_REQUESTS / threads requests on one keep-alive connection (the SDK is too slow for this)."""
        connection = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
        try:
            for _ in range(BULK_REQUESTS // threads):
                connection.request("POST", "/v1/chat/completions", body, headers)
                response = connection.getresponse()
                assert response.status == 200, response.read()
                response.read()
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(many, range(threads)))
    status, headers, payload = export(relay, f"user_id={user['id']}&format=jsonl")
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    ids = [json.loads(line)["id"] for line in payload.decode().splitlines()]
    assert len(ids) == BULK_REQUESTS and len(set(ids)) == BULK_REQUESTS and ids == sorted(ids, reverse=True)
    status, _, payload = export(relay, f"user_id={user['id']}&format=csv&limit=1100")
    assert len(payload.decode().split("\r\n")) == 1100 + 2  # header, rows, and the empty string after the last CRLF


# ---------------------------------------------------------------------------
# Self-service accounts: the relay hands these to the control thread as jobs.


def test_register_login_keys_usage(relay):
    status, _, payload = call(relay.url + "/auth/register", "POST", {"email": "Self@Example.com",
                                                                     "password": "a long passphrase"})
    assert status == 200, payload
    registered = json.loads(payload)
    assert {"token", "api_key", "balance", "balance_display", "message", "user_id"} <= set(registered)
    assert registered["balance"] == 1000000 and registered["balance_display"] == "1.000000"
    first_key = registered["api_key"]

    status, _, payload = call(relay.url + "/auth/register", "POST", {"email": "self@example.com",
                                                                     "password": "another passphrase"})
    assert_error(status, json.loads(payload), 409, "email_taken")
    status, _, payload = call(relay.url + "/auth/register", "POST", {"email": "bad", "password": "long enough"})
    assert_error(status, json.loads(payload), 400, "invalid_email")
    status, _, payload = call(relay.url + "/auth/register", "POST", {"email": "ok@example.com", "password": "short"})
    assert_error(status, json.loads(payload), 400, "invalid_password")

    status, _, payload = call(relay.url + "/auth/login", "POST", {"email": "self@example.com",
                                                                  "password": "a long passphrase"})
    assert status == 200, payload
    token = json.loads(payload)["token"]
    status, _, wrong = call(relay.url + "/auth/login", "POST", {"email": "self@example.com", "password": "nope nope"})
    status_unknown, _, unknown = call(relay.url + "/auth/login", "POST", {"email": "who@example.com",
                                                                          "password": "nope nope"})
    assert status == status_unknown == 401 and wrong == unknown

    status, _, payload = call(relay.url + "/api-keys?name=my%20laptop", "POST", token=token)
    assert status == 200, payload
    created = json.loads(payload)
    assert created["name"] == "my laptop" and created["key"].startswith("sk-")
    status, _, payload = call(relay.url + "/api-keys", token=token)
    listing = json.loads(payload)
    assert status == 200 and len(listing["data"]) == 2
    assert first_key not in payload.decode() and created["key"] not in payload.decode()

    chat(relay, created["key"])
    status, _, payload = call(relay.url + "/billing/usage?limit=5", token=token)
    usage = json.loads(payload)
    assert status == 200 and len(usage["data"]) == 1 and usage["data"][0]["model"] == "plain-demo"
    assert balance_of(relay, first_key) == 1000000 - usage["data"][0]["cost_micros"]

    status, _, payload = call(relay.url + f"/api-keys/{created['id']}", "DELETE", token=token)
    assert status == 200 and json.loads(payload)["deleted"] is True
    with pytest.raises(openai.AuthenticationError):
        chat(relay, created["key"])
    # Someone else's key is not found, and stays active.
    other = new_key(relay, relay.user_id)
    status, _, payload = call(relay.url + f"/api-keys/{other['id']}", "DELETE", token=token)
    assert_error(status, json.loads(payload), 404, "key_not_found")
    assert admin(relay, "GET", f"/admin/keys/{other['id']}")[1]["status"] == "active"


# ---------------------------------------------------------------------------
# Persistence.


def test_changes_survive_a_restart(relay_factory, ringway_bin, workdir):
    first = relay_factory("admin-restart", PRICED)
    user = new_user(first, "persist@example.com", balance="3.00")
    key = new_key(first, user["id"], models=["plain-demo"], tier="silver", spend_cap="1.00",
                  limits={"tokens_per_day": 123456}, token_quota=999999)
    chat(first, key["key"])
    admin(first, "POST", f"/admin/users/{user['id']}/suspend")
    admin(first, "POST", f"/admin/keys/{key['id']}/disable")
    status, before = admin(first, "GET", f"/admin/users/{user['id']}")
    first.process.stop()

    process = ManagedProcess("admin-restart-2", [ringway_bin, "--config", first.config_path], workdir)
    try:
        process.wait_ready(first.url + "/healthz")
        first.process = process
        status, after = admin(first, "GET", f"/admin/users/{user['id']}")
        assert status == 200
        assert after["balance_micros"] == before["balance_micros"] < 3000000
        assert after["status"] == "suspended"
        status, shown = admin(first, "GET", f"/admin/keys/{key['id']}")
        assert shown["status"] == "disabled" and shown["models"] == ["plain-demo"] and shown["tier"] == "silver"
        assert shown["limits"]["tokens_per_day"] == 123456 and shown["token_quota"] == 999999
        assert shown["tokens_used"] > 0  # the chat above, counted by the store for the quota
        assert shown["spend_cap_micros"] == 1000000 and shown["spent_micros"] == 3000000 - after["balance_micros"]
        assert "first start" not in process.stderr_text()
        # New ids continue after the old ones.
        assert new_user(first, "persist2@example.com")["id"] == user["id"] + 1
    finally:
        process.stop()
