"""Admin password check for the Train page: constant-time comparison, throttled failures, and a signed session
token so that a browser refresh does not log the administrator out.

The password comes from the deployer (env DERMADISTILL_ADMIN_PASSWORD or Streamlit secrets,
read by the page); it is never logged or stored in session state in clear. The token (kept in a browser cookie)
holds only an expiry and an HMAC over it, keyed by a per-process secret and the password: it expires after
SESSION_HOURS, and a server restart or a password change ends every session.
"""

import hashlib
import hmac
import os
import threading
import time

ENV_VAR = "DERMADISTILL_ADMIN_PASSWORD"
SESSION_COOKIE = "dermadistill_admin"
SESSION_HOURS = 8
_PROCESS_SECRET = os.urandom(32)  # new at every start: a restart ends every admin session


def configured_password(secrets=None):
    """The deployer's password, or None when none is set."""
    value = os.environ.get(ENV_VAR)
    if not value and secrets is not None:
        try:
            value = secrets.get("admin_password")
        except Exception:  # no secrets.toml: Streamlit raises rather than returning None
            value = None
    return value or None


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of digests (length leaks nothing either)."""
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(a, b)


class LoginThrottle:
    """After each failure a client must wait 2^(failures-1) seconds (capped) before trying again."""

    def __init__(self, base: float = 2.0, cap: float = 60.0, clock=time.monotonic):
        self.base, self.cap, self.clock = base, cap, clock
        self._failures = {}
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        with self._lock:
            count, last = self._failures.get(client, (0, 0.0))
        if count == 0:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (count - 1))
        return max(0.0, last + delay - self.clock())

    def failure(self, client: str) -> None:
        with self._lock:
            count, _ = self._failures.get(client, (0, 0.0))
            self._failures[client] = (count + 1, self.clock())

    def success(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def _session_mac(password: str, expiry: str, secret: bytes) -> str:
    key = secret + hashlib.sha256(password.encode()).digest()
    return hmac.new(key, expiry.encode(), hashlib.sha256).hexdigest()


def session_token(password: str, now: float = None, hours: float = SESSION_HOURS, secret: bytes = None) -> str:
    """`expiry.mac`: proof of a successful login until `expiry` (Unix seconds), for this process and password."""
    expiry = str(int((time.time() if now is None else now) + hours * 3600))
    return f"{expiry}.{_session_mac(password, expiry, secret or _PROCESS_SECRET)}"


def session_token_valid(token, password: str, now: float = None, secret: bytes = None) -> bool:
    """True for an unexpired token made by `session_token` in this process with this password."""
    try:
        expiry, mac = str(token).split(".", 1)
        if int(expiry) < (time.time() if now is None else now):
            return False
    except ValueError:
        return False
    return hmac.compare_digest(mac, _session_mac(password, expiry, secret or _PROCESS_SECRET))
