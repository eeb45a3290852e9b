"""ringctl, the ops tool, against a real relay: every command and subcommand, their --help, the
human tables and --json, --config, and bad input of every kind with the documented exit codes
(0 ok, 1 usage error, 2 refused by the relay, 3 cannot connect / server error)."""

import csv
import io
import json
import os
import subprocess

import openai
import pytest

from conftest import free_port

PRICED = {"model plain-demo": {"input_price": "1.00", "output_price": "2.00"}}

COMMANDS = [("users", "create"), ("users", "list"), ("users", "show"), ("keys", "create"), ("keys", "list"),
            ("keys", "show"), ("keys", "disable"), ("keys", "enable"), ("keys", "set-models"), ("keys", "set-tier"),
            ("keys", "set-limit"), ("keys", "set-quota"), ("keys", "set-expiry"), ("keys", "set-cap"), ("balance", "top-up"), ("balance", "deduct"),
            ("balance", "suspend"), ("balance", "resume"), ("usage", "list"), ("usage", "export"), ("audit", "list"),
            ("upstreams", "list")]


@pytest.fixture(scope="session")
def ringctl_bin():
    path = os.environ.get("RINGCTL_BIN")
    if not path:
        pytest.fail("RINGCTL_BIN is not set; run through `tools/zig build test` or set it to zig-out/bin/ringctl",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
def relay(relay_factory):
    return relay_factory("ringctl", PRICED)


@pytest.fixture
def run(ringctl_bin, relay):
    """run(*args, connect=True, stdin=None, env=None) -> CompletedProcess; connect adds --admin-url and --token."""

    def invoke(*args, connect=True, stdin=None, env=None):
        argv = [ringctl_bin]
        if connect:
            argv += ["--admin-url", relay.admin_url, "--token", relay.admin_token]
        argv += [str(argument) for argument in args]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("RINGCTL_")}
        environment.update(env or {})
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, env=environment)

    return invoke


def ok(completed):
    assert completed.returncode == 0, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def fails(completed, code, *phrases):
    assert completed.returncode == code, f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    lines = completed.stderr.strip().splitlines()
    assert lines and lines[0].startswith("ringctl: "), completed.stderr
    for phrase in phrases:
        assert phrase in completed.stderr, completed.stderr
    return completed.stderr


def as_json(completed):
    return json.loads(ok(completed))


def table(text):
    """Rows of an aligned table as lists of cells split on runs of 2+ spaces."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def make_user(run, email, balance="5.00"):
    return as_json(run("--json", "users", "create", "--email", email, "--balance", balance))


def make_key(run, user_id, *extra):
    return as_json(run("--json", "keys", "create", "--user", user_id, *extra))


def money_display(micros):
    """How ringctl shows money: six decimals with trailing zeros dropped down to two."""
    text = f"{micros // 1000000}.{micros % 1000000:06d}"
    while len(text.split(".")[1]) > 2 and text.endswith("0"):
        text = text[:-1]
    return text


def chat(relay, key, model="plain-demo"):
    with openai.OpenAI(base_url=relay.url + "/v1", api_key=key, max_retries=0, timeout=30) as sdk:
        return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------
# Help, usage errors, exit codes.


def test_help_and_version(run):
    text = ok(run("--help", connect=False))
    for group, name in COMMANDS:
        assert f"{group} {name}" in text
    for phrase in ("Exit codes", "0  done", "1  usage error", "2  the relay refused", "3  cannot connect",
                   "--admin-url", "--token", "--config", "--json", "RINGCTL_ADMIN_TOKEN"):
        assert phrase in text
    assert ok(run("--version", connect=False)).startswith("ringctl ")


@pytest.mark.parametrize("group, name", COMMANDS)
def test_every_subcommand_has_help(run, group, name):
    text = ok(run(group, name, "--help", connect=False))
    assert text.startswith(f"usage: ringctl [OPTIONS] {group} {name}")
    assert "Exit codes" in text


@pytest.mark.parametrize("group", ["users", "keys", "balance", "usage", "audit"])
def test_every_command_has_help(run, group):
    text = ok(run(group, "--help", connect=False))
    assert f"usage: ringctl [OPTIONS] {group} SUBCOMMAND" in text
    bare = run(group, connect=False)
    assert bare.returncode == 1 and bare.stdout == "" and f"ringctl [OPTIONS] {group} SUBCOMMAND" in bare.stderr


@pytest.mark.parametrize("args, phrase", [
    ([], "usage: ringctl"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["users", "delete"], "unknown subcommand 'users delete'"),
    (["users", "list", "--colour"], "unknown option --colour"),
    (["users", "show"], "USER is required"),
    (["users", "show", "abc"], "USER must be a positive integer"),
    (["users", "show", "0"], "USER must be a positive integer"),
    (["users", "show", "1", "2"], "unexpected argument '2'"),
    (["users", "create"], "--email is required"),
    (["users", "create", "--email"], "--email needs a value"),
    (["users", "create", "--email", "a@b.co", "--balance", "1.2345678"], "more than 6 decimal places"),
    (["users", "create", "--email", "a@b.co", "--balance", "-1"], "is not an amount"),
    (["keys", "create"], "--user is required"),
    (["keys", "create", "--user", "1", "--tier", ""], "--tier: name a [tier NAME]"),
    (["keys", "create", "--user", "1", "--quota", "x"], "--quota must be"),
    (["keys", "set-limit", "1", "requests_per_hour=5"], "LIMIT must be NAME=VALUE"),
    (["keys", "set-limit", "1", "requests_per_minute"], "LIMIT must be NAME=VALUE"),
    (["keys", "set-limit", "1", "requests_per_minute=-1"], "VALUE must be"),
    (["keys", "set-limit", "1"], "LIMIT is required"),
    (["keys", "set-quota", "1"], "TOKENS is required"),
    (["keys", "create", "--user", "1", "--expires", "soon"], "is not a time"),
    (["keys", "create", "--user", "1", "--cap", "lots"], "is not an amount"),
    (["keys", "create", "--user", "1", "--models", "a,,b"], "empty model name"),
    (["keys", "create", "--user", "1", "--name", "a", "--name", "b"], "--name given twice"),
    (["keys", "set-tier", "1"], "TIER is required"),
    (["keys", "set-expiry", "1", "2026-02-30"], "is not a time"),
    (["keys", "set-cap", "1", "1.0000001"], "more than 6 decimal places"),
    (["keys", "disable"], "KEY is required"),
    (["balance", "top-up", "1"], "AMOUNT is required"),
    (["balance", "top-up", "1", "abc"], "is not an amount"),
    (["balance", "deduct", "1", "0"], "AMOUNT must be above zero"),
    (["balance", "suspend", "x"], "USER must be a positive integer"),
    (["usage", "list", "--from", "yesterday"], "is not a time"),
    (["usage", "list", "--from", "2026-01-02", "--to", "2026-01-01"], "--to must be later than --from"),
    (["usage", "list", "--limit", "many"], "--limit must be an integer"),
    (["usage", "export", "--format", "xml"], "--format must be csv, jsonl or json"),
    (["audit", "list", "--limit", "5000"], "--limit must be an integer from 0 to 1000"),
])
def test_usage_errors_exit_1_before_sending(run, args, phrase):
    completed = run(*args)
    if not args:
        assert completed.returncode == 1 and phrase in completed.stderr
        return
    fails(completed, 1, phrase)


def test_options_go_before_the_command(run):
    fails(run("--bogus", "users", "list"), 1, "unknown option '--bogus'")
    fails(run("--timeout-ms", "0", "users", "list"), 1, "--timeout-ms")


def test_token_is_required(ringctl_bin, relay, run):
    fails(run("--admin-url", relay.admin_url, "users", "list", connect=False), 1, "no admin token")
    # The environment supplies it.
    text = ok(run("--admin-url", relay.admin_url, "users", "list", connect=False,
                  env={"RINGCTL_ADMIN_TOKEN": relay.admin_token}))
    assert "admin@ringway.local" in text
    text = ok(run("users", "list", connect=False,
                  env={"RINGCTL_ADMIN_TOKEN": relay.admin_token, "RINGCTL_ADMIN_URL": relay.admin_url}))
    assert "admin@ringway.local" in text


def test_wrong_token_exits_2(run, relay):
    stderr = fails(run("--admin-url", relay.admin_url, "--token", "wrong-wrong-wrong", "users", "list",
                       connect=False), 2, "the relay refused (401 invalid_admin_token)")
    assert "--token" in stderr


def test_cannot_connect_exits_3(run):
    port = free_port()
    fails(run("--admin-url", f"http://127.0.0.1:{port}", "--token", "x" * 20, "users", "list", connect=False), 3,
          "cannot reach the admin API", "Connection refused")


@pytest.mark.parametrize("url, phrase", [
    ("https://127.0.0.1:8081", "plain HTTP"),
    ("ftp://127.0.0.1", "is not an http:// URL"),
    ("http://127.0.0.1:99999", "the port must be 1-65535"),
    ("http://:8081", "missing or overlong host"),
])
def test_bad_admin_url_exits_1(run, url, phrase):
    fails(run("--admin-url", url, "--token", "x" * 20, "users", "list", connect=False), 1, phrase)


def test_config_file(run, relay):
    text = ok(run("--config", relay.config_path, "users", "show", "1", connect=False))
    assert "admin@ringway.local" in text
    # Flags beat the file.
    fails(run("--config", relay.config_path, "--token", "wrong-wrong-wrong", "users", "list", connect=False), 2)
    missing = relay.config_path + ".missing"
    fails(run("--config", missing, "users", "list", connect=False), 1, "cannot read")


def test_config_without_admin_token(run, relay, tmp_path):
    config = tmp_path / "no-token.conf"
    config.write_text("\n".join(line for line in relay.config_text.splitlines() if not line.startswith("admin_token")))
    fails(run("--config", config, "users", "list", connect=False), 1, "no admin token")


# ---------------------------------------------------------------------------
# Users.


def test_users_create_list_show(run, relay):
    text = ok(run("users", "create", "--email", "Table@Example.com", "--balance", "2.5"))
    assert "table@example.com" in text and "balance    2.50" in text
    user = as_json(run("--json", "users", "show", "--user", text.split()[1]))
    assert user["email"] == "table@example.com" and user["balance_micros"] == 2500000

    rows = table(ok(run("users", "list", "--limit", "1000")))
    assert rows[0] == ["ID", "EMAIL", "STATUS", "BALANCE", "AVAILABLE", "PASSWORD", "CREATED (UTC)"]
    mine = next(row for row in rows if "table@example.com" in row)
    assert mine[0] == str(user["id"]) and mine[2] == "active" and mine[3] == "2.50" and mine[5] == "no"
    text = ok(run("users", "list", "--limit", "1"))
    assert "(more entries: ringctl users list --after 1)" in text
    listing = as_json(run("--json", "users", "list", "--after", "1", "--limit", "1"))
    assert listing["data"][0]["id"] == 2

    shown = ok(run("users", "show", user["id"]))
    assert shown.startswith(f"user {user['id']}  table@example.com") and "no API keys" in shown

    fails(run("users", "create", "--email", "table@example.com"), 2, "409 email_taken")
    fails(run("users", "create", "--email", "not-an-email"), 2, "400 invalid_email")
    fails(run("users", "show", "999999"), 2, "404 user_not_found", "no user with id 999999")


def test_users_create_password_from_stdin(run, relay):
    user = as_json(run("--json", "users", "create", "--email", "stdin@example.com", "--password-stdin",
                       stdin="a long passphrase\n"))
    assert user["has_password"] is True
    import urllib.request

    request = urllib.request.Request(relay.url + "/auth/login", method="POST",
                                     data=json.dumps({"email": "stdin@example.com",
                                                      "password": "a long passphrase"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and json.loads(response.read())["user_id"] == user["id"]
    fails(run("users", "create", "--email", "short@example.com", "--password-stdin", stdin="short\n"), 2,
          "invalid_password")
    fails(run("users", "create", "--email", "both@example.com", "--password", "x" * 10, "--password-stdin",
              stdin="y" * 10), 1, "not both")


# ---------------------------------------------------------------------------
# Keys.


def test_keys_create_list_show(run, relay):
    user = make_user(run, "keys@example.com")
    text = ok(run("keys", "create", "--user", user["id"], "--name", "build bot", "--models", "plain-demo",
                  "--tier", "bronze", "--quota", "5000000", "--expires", "2099-01-01", "--cap", "1.50"))
    key = text.strip().splitlines()[-1]
    assert key.startswith("sk-") and len(key) == 46
    assert "shown only this once" in text
    assert '"build bot"' in text and "models     plain-demo" in text and "spend cap  1.50" in text
    assert "expires    2099-01-01 00:00:00 UTC" in text and "tier       bronze" in text
    assert "tokens     0 used of 5000000" in text
    assert chat(relay, key).choices[0].message.content

    rows = table(ok(run("keys", "list", "--user", user["id"])))
    assert rows[0] == ["ID", "USER", "NAME", "KEY", "STATUS", "TIER", "MODELS", "EXPIRES (UTC)", "CAP", "SPENT"]
    assert len(rows) == 2
    row = rows[1]
    assert row[1] == str(user["id"]) and row[2] == "build bot" and row[3] == key[:11] + "..." + key[-4:]
    assert row[4] == "active" and row[5] == "bronze" and row[6] == "plain-demo" and row[8] == "1.50"
    assert key not in ok(run("keys", "list"))
    listing = as_json(run("--json", "keys", "list", "--user", user["id"]))
    key_id = listing["data"][0]["id"]
    assert float(row[9]) * 1000000 == pytest.approx(listing["data"][0]["spent_micros"])
    shown = ok(run("keys", "show", key_id))
    assert shown.startswith(f'key {key_id}  "build bot"  {key[:11]}...') and key not in shown

    # Defaults: every model, no cap, never expires.
    created = make_key(run, user["id"])
    assert created["models"] is None and created["spend_cap"] is None and created["expires_at"] is None
    assert created["name"] == "default"

    fails(run("keys", "create", "--user", "999999"), 2, "404 user_not_found")
    fails(run("keys", "create", "--user", user["id"], "--models", "no-such-model"), 2, "400 model_not_found")
    fails(run("keys", "show", "999999"), 2, "404 key_not_found")
    fails(run("keys", "list", "--user", "999999"), 2, "404")


def test_keys_disable_enable_and_settings(run, relay):
    user = make_user(run, "settings@example.com")
    created = make_key(run, user["id"])
    key, key_id = created["key"], created["id"]
    chat(relay, key)

    assert "status     disabled" in ok(run("keys", "disable", key_id))
    with pytest.raises(openai.AuthenticationError):
        chat(relay, key)
    assert "status     active" in ok(run("keys", "enable", "--key", key_id))
    chat(relay, key)

    assert "models     ringway-demo" in ok(run("keys", "set-models", key_id, "ringway-demo"))
    with pytest.raises(openai.PermissionDeniedError):
        chat(relay, key)
    assert "models     all" in ok(run("keys", "set-models", key_id, "all"))
    chat(relay, key)
    # Listed in configuration order.
    assert as_json(run("--json", "keys", "set-models", key_id, "plain-demo,ringway-demo"))["models"] == [
        "ringway-demo", "plain-demo"]

    assert "tier       gold" in ok(run("keys", "set-tier", key_id, "gold"))
    assert as_json(run("--json", "keys", "show", key_id))["tier"] == "gold"
    assert "tier       default" in ok(run("keys", "set-tier", key_id, "default"))
    fails(run("keys", "set-tier", key_id, "platinum"), 2, "invalid_value")
    text = ok(run("keys", "set-limit", key_id, "requests_per_minute=120"))
    assert "limit      requests_per_minute = 120" in text
    text = ok(run("keys", "set-limit", key_id, "concurrent_requests=0"))
    assert "limit      requests_per_minute = 120" in text and "limit      concurrent_requests = 0 (unlimited)" in text
    assert "requests_per_minute" not in ok(run("keys", "set-limit", key_id, "requests_per_minute=default"))
    assert "tokens     " in ok(run("keys", "set-quota", key_id, "1000000")) and as_json(
        run("--json", "keys", "show", key_id))["token_quota"] == 1000000
    assert "no quota" in ok(run("keys", "set-quota", key_id, "none"))

    assert "status     expired" in ok(run("keys", "set-expiry", key_id, "2000-01-01T00:00:00Z"))
    with pytest.raises(openai.AuthenticationError):
        chat(relay, key)
    assert "expires    never" in ok(run("keys", "set-expiry", key_id, "never"))
    chat(relay, key)
    shown = as_json(run("--json", "keys", "set-expiry", key_id, "2098-06-01T12:00:00+02:00"))
    assert shown["expires_at"] == "2098-06-01T10:00:00.000Z"
    assert as_json(run("--json", "keys", "set-expiry", key_id, "4070908800000"))["expires_at_ms"] == 4070908800000

    assert "spend cap  0.000001" in ok(run("keys", "set-cap", key_id, "0.000001"))
    with pytest.raises(openai.APIStatusError) as refused:
        chat(relay, key)
    assert refused.value.status_code == 402
    assert "spend cap  none" in ok(run("keys", "set-cap", key_id, "none"))
    chat(relay, key)

    fails(run("keys", "disable", "999999"), 2, "404 key_not_found")
    fails(run("keys", "set-tier", "999999", "gold"), 2, "404 key_not_found")
    fails(run("keys", "set-models", key_id, "nope"), 2, "model_not_found")


# ---------------------------------------------------------------------------
# Balances.


def test_balance_commands(run, relay):
    user = make_user(run, "money@example.com", balance="1.00")
    key = make_key(run, user["id"])["key"]
    text = ok(run("balance", "top-up", user["id"], "2.25"))
    assert text == f"user {user['id']} (money@example.com): balance 3.25, available 3.25, active\n"
    assert as_json(run("--json", "balance", "deduct", "--user", user["id"], "--amount", "0.25"))["balance_micros"] == 3000000

    stderr = fails(run("balance", "deduct", user["id"], "3.000001"), 2, "409 insufficient_balance")
    assert "only 3.000000 is available" in stderr
    assert as_json(run("--json", "users", "show", user["id"]))["balance_micros"] == 3000000

    assert ok(run("balance", "suspend", user["id"])).endswith(", suspended\n")
    assert as_json(run("--json", "users", "show", user["id"]))["status"] == "suspended"
    with pytest.raises(openai.APIStatusError) as refused:
        chat(relay, key)
    assert refused.value.status_code == 402
    assert ok(run("balance", "resume", user["id"])).endswith("active\n")
    chat(relay, key)

    fails(run("balance", "top-up", "999999", "1"), 2, "404 user_not_found")
    fails(run("balance", "suspend", "999999"), 2, "404")
    fails(run("balance", "top-up", user["id"], "1000000001"), 1, "above 1000000000")


# ---------------------------------------------------------------------------
# Usage and audit.


@pytest.fixture(scope="module")
def usage_user(relay, ringctl_bin):
    def ctl(*args):
        completed = subprocess.run([ringctl_bin, "--admin-url", relay.admin_url, "--token", relay.admin_token,
                                    "--json", *map(str, args)], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout)

    user = ctl("users", "create", "--email", "usage@example.com", "--balance", "10")
    key_a = ctl("keys", "create", "--user", user["id"], "--name", "a")
    key_b = ctl("keys", "create", "--user", user["id"], "--name", "b")
    for _ in range(3):
        chat(relay, key_a["key"])
    chat(relay, key_b["key"])
    return user, key_a, key_b


def test_usage_list(run, usage_user):
    user, key_a, key_b = usage_user
    rows = table(ok(run("usage", "list", "--user", user["id"])))
    assert rows[0] == ["TIME (UTC)", "USER", "KEY", "MODEL", "PROMPT", "COMPLETION", "COST", "STATUS", "REQUEST"]
    assert len(rows) == 5
    assert rows[1][2] == str(key_b["id"]) and all(row[3] == "plain-demo" for row in rows[1:])
    assert all(row[7] == "completed" and row[8].startswith("req_") for row in rows[1:])
    records = as_json(run("--json", "usage", "list", "--key", key_a["id"]))
    assert len(records) == 3 and all(record["key_id"] == key_a["id"] for record in records)
    assert rows[2][6] == money_display(records[0]["cost_micros"])
    assert len(table(ok(run("usage", "list", "--user", user["id"], "--limit", "2")))) == 3
    assert ok(run("usage", "list", "--user", user["id"], "--from", "2099-01-01")).strip() == "no usage records"
    newest = records[0]["created_ms"]
    older = [record for record in records if record["created_ms"] < newest]
    assert as_json(run("--json", "usage", "list", "--key", key_a["id"], "--to", newest)) == older
    fails(run("usage", "list", "--user", "999999"), 2, "404")
    fails(run("usage", "list", "--key", "999999"), 2, "404")


def test_usage_export_formats(run, usage_user, tmp_path):
    user, key_a, key_b = usage_user
    text = ok(run("usage", "export", "--user", user["id"]))  # CSV by default
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:4] == ["id", "created_ms", "created", "request_id"] and len(rows) == 5
    assert all(row[6] == "plain-demo" for row in rows[1:])

    lines = ok(run("usage", "export", "--format", "jsonl", "--key", key_a["id"])).splitlines()
    assert len(lines) == 3 and all(json.loads(line)["key_id"] == key_a["id"] for line in lines)
    records = json.loads(ok(run("usage", "export", "--format", "json", "--user", user["id"], "--limit", "2")))
    assert isinstance(records, list) and len(records) == 2

    output = tmp_path / "usage.csv"
    completed = run("usage", "export", "--user", user["id"], "--output", output)
    assert completed.returncode == 0 and completed.stdout == ""
    assert f"wrote {output.stat().st_size} bytes to {output}" in completed.stderr
    assert output.read_text() == text

    # A refused export leaves no file behind.
    refused = tmp_path / "refused.csv"
    fails(run("usage", "export", "--user", "999999", "--output", refused), 2, "404")
    assert not refused.exists()
    fails(run("usage", "export", "--output", tmp_path / "no-such-dir" / "x.csv"), 1, "cannot write")


def test_audit_list(run, relay):
    user = make_user(run, "audit@example.com")
    run("balance", "top-up", user["id"], "1")
    rows = table(ok(run("audit", "list", "--limit", "2")))
    assert rows[0] == ["TIME (UTC)", "ADMIN", "ACTION", "TARGET", "DETAILS"]
    assert rows[1][2] == "balance.top_up" and rows[1][3] == f"user:{user['id']}"
    assert rows[2][2] == "user.create"
    import hashlib

    assert rows[1][1] == hashlib.sha256(relay.admin_token.encode()).hexdigest()[:12]
    entries = as_json(run("--json", "audit", "list", "--limit", "1000"))["data"]
    assert any(entry["admin"] == "system" and entry["target"] == "user:1" for entry in entries)


def test_json_errors_for_scripts(run):
    completed = run("--json", "users", "show", "999999")
    assert completed.returncode == 2
    assert json.loads(completed.stdout)["error"]["code"] == "user_not_found"
    assert completed.stderr.startswith("ringctl: the relay refused (404 user_not_found)")
