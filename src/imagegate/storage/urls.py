"""The gateway's own file URLs, known here only: ``{public_url}/files/{key}?expires=&sig=``.

Built (``url``), parsed (``parse``), recognised (``is_own``) and signed anew in stored text
(``resign``) in one place: the ``/files/`` route, the stores that hand these URLs out, the
reference-image reader and the idempotency replay all ask this module.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from imagegate.storage.signing import UrlSigner

PATH = "/files/"


@dataclass(frozen=True)
class FileRef:
    """A parsed file URL: ``expires`` is 0 when absent or unreadable (then the signature fails)."""

    key: str
    expires: int
    sig: str

    @classmethod
    def of(cls, key: str, expires: str | None, sig: str | None) -> FileRef:
        """From the URL's parts as text (an unreadable expiry is 0: the signature then fails)."""
        if expires is None or not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return cls(key, 0, sig or "")
        return cls(key, int(expires), sig or "")

    def genuine(self, signer: UrlSigner) -> bool:
        return signer.matches(self.key, self.expires, self.sig)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires


class FileUrls:
    def __init__(self, public_url: str, signer: UrlSigner) -> None:
        self.base = public_url.rstrip("/") + PATH
        self.signer = signer
        self._in_text = re.compile(re.escape(self.base) + r"([A-Za-z0-9/_.-]+)\?expires=\d+&sig=[A-Za-z0-9_-]+")

    def url(self, key: str, ttl: int) -> str:
        """This gateway's URL for ``key``, good for ``ttl`` seconds."""
        expires = int(time.time()) + ttl
        return f"{self.base}{key}?expires={expires}&sig={self.signer.sign(key, expires)}"

    def is_own(self, url: str) -> bool:
        return url.startswith(self.base)

    def parse(self, url: str) -> FileRef | None:
        """The key, expiry and signature of one of this gateway's URLs; None for any other URL."""
        if not self.is_own(url):
            return None
        query = parse_qs(urlsplit(url).query)
        return FileRef.of(url[len(self.base):].split("?", 1)[0], query.get("expires", [None])[0],
                          query.get("sig", [None])[0])

    def resign(self, text: bytes, ttl: int) -> bytes:
        """Every one of this gateway's file URLs in ``text`` signed anew for ``ttl`` seconds."""
        pattern = re.compile(self._in_text.pattern.encode())
        return pattern.sub(lambda m: self.url(m[1].decode(), ttl).encode(), text)
