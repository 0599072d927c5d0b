"""Blobs as files under one directory, served by the gateway itself at ``/files/<key>``."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from imagegate.storage.base import is_valid_key, new_key
from imagegate.storage.signing import UrlSigner


class LocalBlobStore:
    """``root/<key>`` files; URLs are ``{public_url}/files/{key}?expires=..&sig=..``.

    File I/O happens on the event loop, without a thread hop: an image is a few MB, writing it
    lands in the page cache in about a millisecond, which is cheaper than the hand-off to a
    worker thread and back. (No fsync either: an fsync per image would stall the loop for the
    disk's latency, and readers never see a partial file anyway, thanks to the atomic rename.)
    """

    def __init__(self, root: Path, public_url: str, signer: UrlSigner) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)  # fail at start-up, not at the first image
        self.public_url = public_url.rstrip("/")
        self.signer = signer

    async def put(self, data: bytes, *, content_type: str, prefix: str = "img") -> str:
        key = new_key(content_type, prefix=prefix)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a temporary file in the same directory, then rename it into place: a reader sees
        # either no file or the whole file, even if the process dies mid-write.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return key

    async def get(self, key: str) -> bytes:
        path = self.local_path(key)
        if path is None:
            raise KeyError(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url_for(self, key: str, *, ttl: int = 3600) -> str:
        self._path(key)
        expires = int(time.time()) + ttl
        return f"{self.public_url}/files/{key}?expires={expires}&sig={self.signer.sign(key, expires)}"

    def local_path(self, key: str) -> Path | None:
        """The path ``key`` is stored at (whether or not the file exists); None for a key that
        is not a well-formed blob key, so no input reaches outside ``root``."""
        return self.root / key if is_valid_key(key) else None

    def _path(self, key: str) -> Path:
        path = self.local_path(key)
        if path is None:
            raise ValueError(f"invalid blob key {key!r}")
        return path
