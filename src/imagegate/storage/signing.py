"""HMAC signatures for the gateway's own expiring file URLs (``/files/<key>?expires=&sig=``)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time


class UrlSigner:
    """Signs ``(key, expires)`` with HMAC-SHA256; the signature is URL-safe base64 without padding.

    ``expires`` is a Unix time in seconds; a URL is good up to and including that second."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the URL signing secret must not be empty")
        self._secret = secret
        # An image is stored (and a key read) per request: each account's tag is computed once.
        self._owner_tags = functools.lru_cache(maxsize=4096)(self._owner_tag)

    def sign(self, key: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def owner_tag(self, account_id: str) -> str:
        """The mark of an account's images in their blob keys: 16 hex of an HMAC of its id (a key
        names no account, and only this gateway can mark one). Remembered for the last 4096 accounts."""
        return self._owner_tags(account_id)

    def _owner_tag(self, account_id: str) -> str:
        return hmac.new(self._secret, f"owner\n{account_id}".encode(), hashlib.sha256).hexdigest()[:16]

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for another use of the gateway's secret (the console's session cookie)."""
        return hmac.new(self._secret, f"derive\n{purpose}".encode(), hashlib.sha256).digest()

    def matches(self, key: str, expires: int, sig: str) -> bool:
        """The signature is genuine for this key and expiry time (expired or not)."""
        if not sig.isascii():
            return False
        return hmac.compare_digest(self.sign(key, expires).encode("ascii"), sig.encode("ascii"))

    def verify(self, key: str, expires: int, sig: str, now: float | None = None) -> bool:
        """Genuine and not yet expired. Compares in constant time."""
        current = time.time() if now is None else now
        return self.matches(key, expires, sig) and current <= expires
