"""Where generated and uploaded images are kept: ``open_store`` picks the backend from a URL."""

from __future__ import annotations

from pathlib import Path

from imagegate.config import StorageConfig
from imagegate.storage.base import BlobInfo, BlobStore, content_type_of, is_valid_key, new_key, owner_of
from imagegate.storage.local import LocalBlobStore
from imagegate.storage.signing import UrlSigner

__all__ = ["BlobInfo", "BlobStore", "LocalBlobStore", "UrlSigner", "content_type_of", "is_valid_key", "new_key",
           "open_store", "owner_of"]


def open_store(storage_url: str, *, public_url: str, secret: bytes, storage: StorageConfig | None = None) -> BlobStore:
    """``file://./data/images`` (relative to the working directory), ``file:///abs/path``, or
    ``s3://bucket/prefix`` (reached as ``storage`` says: endpoint, region, keys, URL mode)."""
    scheme, sep, rest = storage_url.partition("://")
    if sep and scheme.lower() == "file" and rest:
        # "file://./x" is not a standard file URL (its "host" would be "."), but it is the
        # readable way to say "relative to where the server starts", so it is read literally.
        return LocalBlobStore(Path(rest).absolute(), public_url, UrlSigner(secret))
    if sep and scheme.lower() == "s3":
        from imagegate.storage.s3 import S3BlobStore, parse_s3_url  # the S3 client loads only when used

        bucket, prefix = parse_s3_url(storage_url)
        return S3BlobStore(bucket, prefix, storage or StorageConfig(), public_url, UrlSigner(secret))
    raise ValueError(f"storage_url {storage_url!r} is not supported: use file://./relative/dir, file:///absolute/dir "
                     "or s3://bucket/prefix")
