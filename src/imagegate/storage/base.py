"""The blob store interface and the shape of its keys.

A key names one stored object: ``<prefix>/<yyyy>/<mm>/<dd>/[<owner>-]<32 hex>.<ext>``, e.g.
``img/2026/11/24/3dad96708a77485e97ac7ef652796d7b.png``. Keys are made here, never taken from a
caller unchecked: ``is_valid_key`` admits exactly this shape, so a key can be joined to a
directory or a bucket without any way to climb out of it.

``<owner>`` (16 hex) marks an image made for an account: ``UrlSigner.owner_tag`` of its id, so a
key names no account and only this gateway can mark one. It is how the account may send its own
image back after the image's URL expired (``Gateway``: own URLs as references).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
_OWNER = re.compile(r"[0-9a-f]{16}")
_KEY = re.compile(rf"{_PREFIX.pattern}/\d{{4}}/\d{{2}}/\d{{2}}/(?:(?P<owner>{_OWNER.pattern})-)?[0-9a-f]{{32}}"
                  rf"\.(?:{'|'.join(TYPE_BY_EXTENSION)})")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What ``GET /files/`` needs to know about an object before it sends any of it."""

    size: int
    modified: float
    """Unix seconds."""
    etag: str | None = None


class BlobStore(Protocol):
    """Where images live once the gateway has them. Implementations: ``LocalBlobStore``,
    ``S3BlobStore``."""

    async def put(self, data: bytes, *, content_type: str, prefix: str = "img", owner: str | None = None) -> str:
        """Store ``data`` under a new key (marked with ``owner``, an owner tag) and return the key."""
        ...

    async def get(self, key: str) -> bytes:
        """The stored bytes; ``KeyError`` if there is no such object."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """Size and modification time of the object; None if there is none (or ``key`` is not a
        well-formed key)."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` up to ``end`` (exclusive; None: the end) of the object, in chunks, never
        the whole object at once; ``KeyError`` (at the first chunk) if there is no such object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    def keys_older_than(self, cutoff: float) -> AsyncIterator[list[str]]:
        """The keys of objects stored before ``cutoff`` (Unix seconds), in batches, oldest days
        first (within each key prefix): what the retention sweeper may delete. Deleting the keys
        of a batch before asking for the next one is allowed."""
        ...

    def url_for(self, key: str, *, ttl: int = 3600) -> str:
        """An absolute URL that serves the object for ``ttl`` seconds and then stops working."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file behind ``key`` when the gateway serves it itself; None for remote stores."""
        ...


def new_key(content_type: str, *, prefix: str = "img", owner: str | None = None, now: datetime | None = None) -> str:
    """A fresh key for an object of ``content_type`` (unknown types get ``.bin``), marked with
    ``owner`` (an owner tag: 16 hex) when given."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid blob key prefix {prefix!r}: use lowercase letters, digits, '-' and '_'")
    if owner is not None and not _OWNER.fullmatch(owner):
        raise ValueError(f"invalid blob owner tag {owner!r}: 16 lowercase hex digits")
    ext = EXTENSION_BY_TYPE.get(content_type.split(";", 1)[0].strip().lower(), "bin")
    day = (now or datetime.now(UTC)).strftime("%Y/%m/%d")
    mark = f"{owner}-" if owner is not None else ""
    return f"{prefix}/{day}/{mark}{uuid.uuid4().hex}.{ext}"


def is_valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def owner_of(key: str) -> str | None:
    """The owner tag a key is marked with; None for an unmarked (or malformed) key."""
    m = _KEY.fullmatch(key)
    return m["owner"] if m else None


def content_type_of(key: str) -> str:
    return TYPE_BY_EXTENSION.get(key.rpartition(".")[2], "application/octet-stream")
