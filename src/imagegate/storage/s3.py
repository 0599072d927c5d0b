"""Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, …), through obstore.

``storage_url: s3://bucket/prefix``: a key ``img/2026/11/24/<hex>.png`` is the object
``prefix/img/2026/11/24/<hex>.png``. Where the server is and which credentials sign the requests
come from the ``storage:`` section, completed from the AWS SDKs' variables by ``load_settings``
(``StorageConfig``); this module reads no environment of its own.

obstore (Rust ``object_store`` under a thin binding) does the HTTP: SigV4 signing, retries,
multipart uploads, ranged and streamed reads, listing, presigning. Writes hand it the caller's
``bytes`` without a copy (it borrows the buffer); an image above 5 MB goes up as a multipart upload
in 5 MB parts. Reads for ``GET /files/`` are streamed in chunks, never held whole.

URLs are the gateway's own signed ``/files/`` URLs (``api/files.py`` streams the object from the
bucket) unless ``storage.presign`` is set: then ``url_for`` presigns a ``GET`` of the object itself
(SigV4 query signature, at most 7 days), and clients download from the bucket directly.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.store import S3Store

from imagegate.config import StorageConfig
from imagegate.storage.base import BlobInfo, content_type_of, is_valid_key, new_key
from imagegate.storage.signing import UrlSigner
from imagegate.storage.urls import FileUrls

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ClientConfig, S3Config, S3Credential

READ_CHUNK = 512 * 1024
"""Bytes per chunk when ``GET /files/`` streams an object to a client."""
MAX_PRESIGN_SECONDS = 7 * 86400
"""The longest a SigV4 presigned URL can be valid."""
LIST_PAGE = 1000

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]+")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")`` (the prefix may be empty)."""
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not sep or scheme.lower() != "s3" or not _BUCKET.fullmatch(bucket):
        raise ValueError(f"storage_url {url!r}: use s3://<bucket>/<optional/prefix> with a valid bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") or not _PREFIX_PART.fullmatch(p) for p in parts):
        raise ValueError(f"storage_url {url!r}: the prefix may hold letters, digits, '.', '_', '-' and '/'")
    return bucket, "/".join(parts)


class S3BlobStore:
    """Objects under ``prefix`` in ``bucket``; URLs are the gateway's ``/files/`` URLs or presigned."""

    def __init__(self, bucket: str, prefix: str, cfg: StorageConfig, public_url: str, signer: UrlSigner) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.urls = FileUrls(public_url, signer)
        self.presign = cfg.presign
        config: S3Config = {"region": cfg.region or "us-east-1",
                            "virtual_hosted_style_request": not cfg.uses_path_style}
        if cfg.endpoint_url is not None:
            # Virtual-hosted addressing on a custom endpoint: the bucket is part of the host name.
            scheme, _, host = cfg.endpoint_url.partition("://")
            config["endpoint"] = cfg.endpoint_url if cfg.uses_path_style else f"{scheme}://{bucket}.{host}"
        credentials: S3Credential | None = None
        if cfg.access_key_id is not None and cfg.secret_access_key is not None:
            # Handed over as a provider, not as config values: the client would otherwise add an
            # ``AWS_SESSION_TOKEN`` from the environment to keys that came from the file.
            credentials = {"access_key_id": cfg.access_key_id, "secret_access_key": cfg.secret_access_key,
                           "token": cfg.session_token, "expires_at": None}
        client: ClientConfig = {
            "allow_http": (cfg.endpoint_url or "").lower().startswith("http://"),
            "connect_timeout": timedelta(seconds=5),
            # A whole exchange, a streamed download to a slow client included.
            "timeout": timedelta(seconds=300),
        }
        self._s3 = S3Store(bucket, prefix=prefix or None, config=config, client_options=client,
                           retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
                           credential_provider=None if credentials is None else _Static(credentials))

    async def put(self, data: bytes, *, content_type: str, prefix: str = "img", owner: str | None = None) -> str:
        key = new_key(content_type, prefix=prefix, owner=owner)
        # ``data`` is lent to the client as it is (no copy); above 5 MB it is sent as a multipart
        # upload of 5 MB slices of it. The object is visible only once complete.
        await obstore.put_async(self._s3, key, data, attributes={"Content-Type": content_type_of(key)})
        return key

    async def get(self, key: str) -> bytes:
        if not is_valid_key(key):
            raise KeyError(key)
        try:
            result = await obstore.get_async(self._s3, key)
        except FileNotFoundError:
            raise KeyError(key) from None
        return bytes(await result.bytes_async())

    async def stat(self, key: str) -> BlobInfo | None:
        if not is_valid_key(key):
            return None
        try:
            meta = await obstore.head_async(self._s3, key)
        except FileNotFoundError:
            return None
        return BlobInfo(size=meta["size"], modified=meta["last_modified"].timestamp(), etag=meta["e_tag"])

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if not is_valid_key(key):
            raise KeyError(key)
        if end is not None and end <= start:
            return
        options: GetOptions = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self._s3, key, options=options)
        except FileNotFoundError:
            raise KeyError(key) from None
        async for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield chunk

    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            raise ValueError(f"invalid blob key {key!r}")
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._s3, key)

    async def keys_older_than(self, cutoff: float, *, batch: int = LIST_PAGE) -> AsyncIterator[list[str]]:
        """Keys whose object was last written (``LastModified``) before ``cutoff``. Each key
        prefix (``img``, ``task-in``, …) is listed in key order, which is day order, and the
        listing of a prefix stops at the first key of a day after the cutoff's day."""
        last_day = datetime.fromtimestamp(cutoff, UTC).strftime("%Y/%m/%d")
        top = await obstore.list_with_delimiter_async(self._s3)
        for prefix in sorted(top["common_prefixes"]):
            done = False
            async for page in obstore.list(self._s3, prefix, chunk_size=batch):
                found: list[str] = []
                for meta in page:
                    key = meta["path"]
                    if not is_valid_key(key):
                        continue
                    if key[len(prefix) + 1:len(prefix) + 11] > last_day:
                        done = True
                        break
                    if meta["last_modified"].timestamp() < cutoff:
                        found.append(key)
                if found:
                    yield found
                if done:
                    break

    def url_for(self, key: str, *, ttl: int = 3600) -> str:
        if not is_valid_key(key):
            raise ValueError(f"invalid blob key {key!r}")
        if self.presign:
            return obstore.sign(self._s3, "GET", key, timedelta(seconds=min(ttl, MAX_PRESIGN_SECONDS)))
        return self.urls.url(key, ttl)

    def local_path(self, key: str) -> None:
        return None


class _Static:
    """Keys that never expire, as an obstore credential provider."""

    def __init__(self, credentials: S3Credential) -> None:
        self.credentials = credentials

    def __call__(self) -> S3Credential:
        return self.credentials
