"""Blobs as files under one directory, served by the gateway itself at ``/files/<key>``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from imagegate.storage.base import BlobInfo, is_valid_key, new_key
from imagegate.storage.signing import UrlSigner
from imagegate.storage.urls import FileUrls

_DIGITS = re.compile(r"\d+")
STALE_TEMP_SECONDS = 3600.0
"""A ``.tmp-*.part`` file this old was left by a process that died while writing it."""
READ_CHUNK = 256 * 1024


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
        self.urls = FileUrls(public_url, signer)

    async def put(self, data: bytes, *, content_type: str, prefix: str = "img", owner: str | None = None) -> str:
        key = new_key(content_type, prefix=prefix, owner=owner)
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

    async def stat(self, key: str) -> BlobInfo | None:
        path = self.local_path(key)
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            return None
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        return BlobInfo(size=st.st_size, modified=st.st_mtime)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.local_path(key)
        try:
            f = path.open("rb") if path is not None else None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            f = None
        if f is None:
            raise KeyError(key)
        with f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def keys_older_than(self, cutoff: float, *, batch: int = 1000) -> AsyncIterator[list[str]]:
        """Keys of files last written before ``cutoff``, one day directory at a time (the scans
        run in a thread: a day may hold many thousands of files). Days after the cutoff's day
        are not even listed. After a day is consumed, its directory is removed if it is empty and
        the day is over (so no ``put`` can be about to write into it)."""
        cutoff_day = datetime.fromtimestamp(cutoff, UTC).date()
        for day_dir in await asyncio.to_thread(self._days_up_to, cutoff_day):
            keys = await asyncio.to_thread(self._files_before, day_dir, cutoff)
            for i in range(0, len(keys), batch):
                yield keys[i:i + batch]
            await asyncio.to_thread(self._prune, day_dir)

    def _days_up_to(self, last: date) -> list[Path]:
        """``<prefix>/<yyyy>/<mm>/<dd>`` directories of days up to ``last``, oldest first."""
        found: list[tuple[date, Path]] = []
        for prefix in _subdirs(self.root):
            for year in _subdirs(prefix):
                for month in _subdirs(year):
                    for day in _subdirs(month):
                        names = (year.name, month.name, day.name)
                        if not all(_DIGITS.fullmatch(n) for n in names):
                            continue
                        try:
                            when = date(*(int(n) for n in names))
                        except ValueError:
                            continue
                        if when <= last:
                            found.append((when, day))
        return [path for _, path in sorted(found)]

    def _files_before(self, day_dir: Path, cutoff: float) -> list[str]:
        keys: list[str] = []
        stale_temp = min(cutoff, time.time() - STALE_TEMP_SECONDS)
        with contextlib.suppress(FileNotFoundError), os.scandir(day_dir) as entries:
            for entry in entries:
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if entry.name.startswith(".tmp-") and mtime < stale_temp:
                    Path(entry.path).unlink(missing_ok=True)  # a crashed writer's leftover
                    continue
                key = Path(entry.path).relative_to(self.root).as_posix()
                if mtime < cutoff and is_valid_key(key):
                    keys.append(key)
        return keys

    def _prune(self, day_dir: Path) -> None:
        """Remove the empty directories of days, months and years that are over."""
        today = datetime.now(UTC).date()
        year, month, day = (int(p.name) for p in (day_dir.parent.parent, day_dir.parent, day_dir))
        # "Over" with a day's slack: a put that picked its key just before midnight may still write.
        over = [(day_dir, date(year, month, day) < today - timedelta(days=1)),
                (day_dir.parent, (year, month) < (today.year, today.month)),
                (day_dir.parent.parent, year < today.year)]
        for path, done in over:
            if not done:
                return
            try:
                path.rmdir()
            except OSError:  # not empty (or already gone)
                return

    def url_for(self, key: str, *, ttl: int = 3600) -> str:
        self._path(key)
        return self.urls.url(key, ttl)

    def local_path(self, key: str) -> Path | None:
        """The path ``key`` is stored at (whether or not the file exists); None for a key that
        is not a well-formed blob key, so no input reaches outside ``root``."""
        return self.root / key if is_valid_key(key) else None

    def _path(self, key: str) -> Path:
        path = self.local_path(key)
        if path is None:
            raise ValueError(f"invalid blob key {key!r}")
        return path


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
