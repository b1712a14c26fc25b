"""Admin password check for the Train page: constant-time comparison and throttled failures.

The password comes from the deployer (env DERMADISTILL_ADMIN_PASSWORD or Streamlit secrets,
read by the page); it is never logged or stored in session state in clear.
"""

import hashlib
import hmac
import os
import threading
import time

ENV_VAR = "DERMADISTILL_ADMIN_PASSWORD"


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
