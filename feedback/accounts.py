"""Accounts of the web UI, in the feedback database: name, role, and a password hashed with
scrypt (Python's ``hashlib.scrypt``, RFC 7914; a random salt per password).

``qtune users add/remove/list`` manages them. While at least one account exists, the web
UI asks for a login, and each person sees only their own History, ratings and votes;
the ``admin`` role also sees the leaderboard.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from qtune.feedback.store import FeedbackStore, utc_now

ROLES = ("user", "admin")
#: scrypt's cost settings (OWASP's minimum for scrypt: N=2^17, r=8, p=1 takes ~0.3 s and
#: 128 MiB here; N=2^15 keeps a login near 0.08 s and 32 MiB on a 2-core machine).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD_CHARS = 8
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_at: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex), the form :func:`verify_password` reads."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + 1024 * 1024, dklen=32)


#: Hashed once: a login for an unknown name costs as much as one for a known name.
_UNKNOWN_USER_HASH = hash_password(secrets.token_hex(16))


class Accounts:
    """The accounts in a feedback store."""

    def __init__(self, store: FeedbackStore | None = None) -> None:
        self.store = store or FeedbackStore()

    def add(self, name: str, password: str, role: str = "user") -> Account:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' "
                             "or '-', starting with a letter or digit")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if len(password) < MIN_PASSWORD_CHARS:
            raise ValueError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")
        if self.get(name) is not None:
            raise ValueError(f"user {name!r} exists already; remove it first to reset it")
        row = {"name": name, "password_hash": hash_password(password), "role": role,
               "created_at": utc_now()}
        with self.store._write() as db:
            db["users"].insert(row)
        return Account(name, role, row["created_at"])

    def remove(self, name: str) -> None:
        """Remove the account (its conversations stay, visible to admins)."""
        if self.get(name) is None:
            raise ValueError(f"no user is called {name!r} (see `qtune users list`)")
        with self.store._write() as db:
            db["users"].delete(name)

    def get(self, name: str) -> Account | None:
        with self.store._read() as db:
            rows = list(db["users"].rows_where("name = ?", [name]))
        return Account(rows[0]["name"], rows[0]["role"], rows[0]["created_at"]) if rows else None

    def list(self) -> list[Account]:
        with self.store._read() as db:
            return [Account(row["name"], row["role"], row["created_at"])
                    for row in db["users"].rows_where(order_by="name")]

    def exist(self) -> bool:
        with self.store._read() as db:
            return db["users"].count > 0

    def check(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (slow on purpose: scrypt; run it off the
        event loop)."""
        with self.store._read() as db:
            rows = list(db["users"].rows_where("name = ?", [name], select="password_hash"))
        stored = rows[0]["password_hash"] if rows else _UNKNOWN_USER_HASH
        return verify_password(password, stored) and bool(rows)
