"""The blob store interface and the shape of its keys.

A key names one stored object: ``<prefix>/<yyyy>/<mm>/<dd>/<32 hex>.<ext>``, e.g.
``img/2026/11/24/3dad96708a77485e97ac7ef652796d7b.png``. Keys are made here, never taken from a
caller unchecked: ``is_valid_key`` admits exactly this shape, so a key can be joined to a
directory or a bucket without any way to climb out of it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

EXTENSION_BY_TYPE = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/octet-stream": "bin",
}
TYPE_BY_EXTENSION = {ext: mime for mime, ext in EXTENSION_BY_TYPE.items()}

_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_KEY = re.compile(rf"{_PREFIX.pattern}/\d{{4}}/\d{{2}}/\d{{2}}/[0-9a-f]{{32}}\.(?:{'|'.join(TYPE_BY_EXTENSION)})")


class BlobStore(Protocol):
    """Where images live once the gateway has them. Implementations: ``LocalBlobStore``."""

    async def put(self, data: bytes, *, content_type: str, prefix: str = "img") -> str:
        """Store ``data`` under a new key and return the key."""
        ...

    async def get(self, key: str) -> bytes:
        """The stored bytes; ``KeyError`` if there is no such object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    def url_for(self, key: str, *, ttl: int = 3600) -> str:
        """An absolute URL that serves the object for ``ttl`` seconds and then stops working."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file behind ``key`` when the gateway serves it itself; None for remote stores."""
        ...


def new_key(content_type: str, *, prefix: str = "img", now: datetime | None = None) -> str:
    """A fresh key for an object of ``content_type`` (unknown types get ``.bin``)."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid blob key prefix {prefix!r}: use lowercase letters, digits, '-' and '_'")
    ext = EXTENSION_BY_TYPE.get(content_type.split(";", 1)[0].strip().lower(), "bin")
    day = (now or datetime.now(UTC)).strftime("%Y/%m/%d")
    return f"{prefix}/{day}/{uuid.uuid4().hex}.{ext}"


def is_valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def content_type_of(key: str) -> str:
    return TYPE_BY_EXTENSION.get(key.rpartition(".")[2], "application/octet-stream")
