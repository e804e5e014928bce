"""Accounts and logins for the UI: scrypt-hashed passwords in the feedback database,
login throttling that never locks out the owner, and secrets read from files."""

from __future__ import annotations

import sqlite3

import pytest


def test_logins_are_throttled_per_client_and_name_without_locking_out_the_owner():
    """A guesser is refused at once (no check, no sleep) after too many failures; the owner,
    from a client that logged in before, still gets in; lock-outs end in seconds."""
    import asyncio

    from qtune.ui import login

    now = [1000.0]
    throttle = login.LoginThrottle(clock=lambda: now[0])
    checked: list[str] = []

    def check(name: str, password: str) -> bool:
        checked.append(password)
        return (name, password) == ("ann", "right password")

    auth = login.login_function(check, throttle)

    def attempt(client: str, name: str, password: str) -> bool:
        token = login.current_client.set(client)
        try:
            return asyncio.run(auth(name, password))
        finally:
            login.current_client.reset(token)

    assert attempt("10.0.0.1", "ann", "right password")  # the owner's usual client
    assert not any(attempt("10.6.6.6", "ann", f"guess {i}") for i in range(login.NAME_FAILURES))
    checked.clear()
    assert not attempt("10.6.6.6", "ann", "right password")  # the name is locked for others
    assert not attempt("10.7.7.7", "ann", "right password")
    assert checked == []  # refused without a check
    assert attempt("10.0.0.1", "ann", "right password")  # the owner's client is not
    now[0] += login.LOCKOUT_S + 1
    assert attempt("10.7.7.7", "ann", "right password")  # the lock-out has expired
    for i in range(login.CLIENT_FAILURES):  # one client guessing many names
        attempt("10.8.8.8", f"user{i}", "x")
    assert not attempt("10.8.8.8", "ann", "right password")


def test_wrong_logins_do_not_block_the_event_loop():
    """Gradio awaits the login in its event loop: eight wrong logins at once (each a full
    scrypt check) must leave the loop free for everyone else's requests."""
    import asyncio
    import time

    from qtune.feedback.accounts import hash_password, verify_password
    from qtune.ui import login

    stored = hash_password("the right password")
    auth = login.login_function(lambda name, password: verify_password(password, stored))

    async def scenario() -> float:
        worst, stop = 0.0, asyncio.Event()

        async def heartbeat() -> None:
            nonlocal worst
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.01)
                worst = max(worst, time.perf_counter() - started - 0.01)

        beat = asyncio.create_task(heartbeat())
        results = await asyncio.gather(*(auth("ann", f"guess {i}") for i in range(8)))
        stop.set()
        await beat
        assert not any(results)
        return worst

    assert asyncio.run(scenario()) < 0.1


def test_accounts_hash_passwords_and_check_them(tmp_path):
    from qtune.feedback.accounts import Accounts
    from qtune.feedback.store import FeedbackStore

    accounts = Accounts(FeedbackStore(tmp_path / "fb.db"))
    assert not accounts.exist()
    accounts.add("ann", "ann's password", "admin")
    accounts.add("bob", "bob's password")
    with sqlite3.connect(tmp_path / "fb.db") as conn:
        stored = dict(conn.execute("select name, password_hash from users"))
    assert stored["ann"].startswith("scrypt$") and "ann's password" not in stored["ann"]
    assert accounts.check("ann", "ann's password") and not accounts.check("ann", "bob's password")
    assert not accounts.check("carol", "ann's password")
    assert [(a.name, a.admin) for a in accounts.list()] == [("ann", True), ("bob", False)]
    with pytest.raises(ValueError, match="at least 8"):
        accounts.add("carol", "short")
    with pytest.raises(ValueError, match="exists already"):
        accounts.add("bob", "another password")
    accounts.remove("bob")
    assert accounts.get("bob") is None and not accounts.check("bob", "bob's password")


def test_secrets_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    from qtune.config import settings
    from qtune.errors import QtuneError

    for name in ("QTUNE_API_KEY", "VLLM_API_KEY", "QTUNE_UI_AUTH"):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    monkeypatch.setenv("QTUNE_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("QTUNE_UI_AUTH_FILE", str(key_file))
    assert settings().api_key == "from-a-file" and settings().ui_auth == "from-a-file"
    monkeypatch.setenv("QTUNE_API_KEY", "from-the-environment")
    assert settings().api_key == "from-the-environment"
    key_file.write_text("")
    with pytest.raises(QtuneError, match="is empty"):
        settings()
