"""The one place that knows the gateway's file URLs: built, parsed, recognised, re-signed."""

from __future__ import annotations

import time

from imagegate.storage.signing import UrlSigner
from imagegate.storage.urls import FileRef, FileUrls

URLS = FileUrls("https://gw.example/", UrlSigner(b"secret"))
KEY = "img/2026/12/07/" + "a" * 32 + ".png"


def test_a_built_url_parses_back_genuine_and_fresh() -> None:
    url = URLS.url(KEY, ttl=60)
    assert url.startswith("https://gw.example/files/img/2026/12/07/") and URLS.is_own(url)
    ref = URLS.parse(url)
    assert ref is not None and ref.key == KEY and ref.genuine(URLS.signer) and not ref.expired()
    assert ref.expired(now=time.time() + 120)


def test_foreign_and_forged_urls() -> None:
    assert URLS.parse("https://elsewhere.example/files/" + KEY + "?expires=1&sig=x") is None
    forged = URLS.parse(f"https://gw.example/files/{KEY}?expires=99999999999&sig=AAAA")
    assert forged is not None and not forged.genuine(URLS.signer)
    for expires in ("", "-1", "1e9", "١٢٣", "9" * 20, None):
        assert FileRef.of(KEY, expires, "sig").expires == 0


def test_resign_replaces_every_own_url_in_a_body() -> None:
    old = URLS.url(KEY, ttl=-10)  # already expired
    other = "https://elsewhere.example/files/x.png?expires=1&sig=y"
    body = f'{{"data": [{{"url": "{old}"}}, {{"url": "{other}"}}]}}'.encode()
    new = URLS.resign(body, ttl=60).decode()
    assert old not in new and other in new
    fresh = URLS.parse(new.split('"url": "')[1].split('"')[0])
    assert fresh is not None and fresh.key == KEY and fresh.genuine(URLS.signer) and not fresh.expired()
