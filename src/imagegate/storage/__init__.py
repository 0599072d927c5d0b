"""Where generated and uploaded images are kept: ``open_store`` picks the backend from a URL."""

from __future__ import annotations

from pathlib import Path

from imagegate.storage.base import BlobStore, content_type_of, is_valid_key, new_key
from imagegate.storage.local import LocalBlobStore
from imagegate.storage.signing import UrlSigner

__all__ = ["BlobStore", "LocalBlobStore", "UrlSigner", "content_type_of", "is_valid_key", "new_key", "open_store"]


def open_store(storage_url: str, *, public_url: str, secret: bytes) -> BlobStore:
    """``file://./data/images`` (relative to the working directory) or ``file:///abs/path``."""
    scheme, sep, rest = storage_url.partition("://")
    if sep and scheme.lower() == "file" and rest:
        # "file://./x" is not a standard file URL (its "host" would be "."), but it is the
        # readable way to say "relative to where the server starts", so it is read literally.
        return LocalBlobStore(Path(rest).absolute(), public_url, UrlSigner(secret))
    raise ValueError(f"storage_url {storage_url!r} is not supported: use file://./relative/dir or file:///absolute/dir")
