"""The gateway's own image URLs as reference images, once their signature has expired (issue #11).

A ``/files/`` URL is a capability while it is valid: anyone holding it may send it back. After it
expires, only the account whose image it is may still refine it (a chat conversation lives longer
than ``url_ttl``); anyone else is refused, and a bad signature is refused whoever sends it.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
from openai import OpenAI

from tests.conftest import StartGateway
from tests.emulators.openai import OpenAIEmulator
from tests.harness import GatewayProcess, channel

TTL = 3
LINK = re.compile(r"!\[image\]\((\S+)\)")


@pytest.fixture(scope="module")
def gw(emu: OpenAIEmulator, module_gateway_factory: StartGateway) -> GatewayProcess:
    return module_gateway_factory({
        "channels": [channel("oa", "openai", emu.url + "/v1", {"gpt-image-1": "gpt-image-1"})],
        "local_model": False, "url_ttl": TTL,
    }, name="own-urls")


@pytest.fixture(autouse=True)
def _reset(emu: OpenAIEmulator) -> None:
    emu.reset()


def client(gw: GatewayProcess, key: str) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def refine(gw: GatewayProcess, key: str, first_content: str) -> httpx.Response:
    """The second turn of a chat conversation: the answer of the first turn is in the history."""
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "gpt-image-1", "messages": [
                          {"role": "user", "content": "a meadow under a blue sky"},
                          {"role": "assistant", "content": first_content},
                          {"role": "user", "content": "now make the sky purple"}]})


def edits_received(emu: OpenAIEmulator) -> list[bytes]:
    return [f.data for c in emu.calls if c.path == "/v1/images/edits" for f in c.form["image[]"]]


def wait_until_expired(url: str) -> None:
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    time.sleep(max(0.0, expires + 1.1 - time.time()))
    assert httpx.get(url).status_code == 403  # the URL itself no longer serves the file


@pytest.fixture(scope="module")
def owner(gw: GatewayProcess) -> str:
    return gw.account(name="owner")


@pytest.fixture(scope="module")
def first_turn(gw: GatewayProcess, owner: str) -> tuple[str, str, bytes]:
    """(the first answer's content, its image URL, the image bytes), made by ``owner``, expired."""
    with client(gw, gw.key(account=owner)) as c:
        answer = c.chat.completions.create(model="gpt-image-1",
                                           messages=[{"role": "user", "content": "a meadow under a blue sky"}])
    content = answer.choices[0].message.content or ""
    [url] = LINK.findall(content)
    assert owner not in url and owner.removeprefix("acct_") not in url  # the key marks, never names, its account
    image = httpx.get(url).content
    wait_until_expired(url)
    return content, url, image


def test_owner_refines_a_conversation_older_than_the_url_ttl(gw: GatewayProcess, emu: OpenAIEmulator, owner: str,
                                                           first_turn: tuple[str, str, bytes]) -> None:
    content, _, image = first_turn
    r = refine(gw, gw.key(account=owner), content)  # another key of the same account: ownership is per account
    assert r.status_code == 200, r.text
    assert edits_received(emu) == [image]


def test_owner_sends_the_expired_url_as_an_image_reference(gw: GatewayProcess, emu: OpenAIEmulator, owner: str,
                                                           first_turn: tuple[str, str, bytes]) -> None:
    _, url, image = first_turn
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key(account=owner)}"},
                   json={"model": "gpt-image-1", "prompt": "the same meadow at night", "image": [url]}, timeout=30)
    assert r.status_code == 200, r.text
    assert edits_received(emu) == [image]


def test_another_account_cannot_use_an_expired_url(gw: GatewayProcess, emu: OpenAIEmulator,
                                                  first_turn: tuple[str, str, bytes]) -> None:
    content, _, _ = first_turn
    r = refine(gw, gw.key(), content)  # gw.key() makes a key of a new account
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "image[0]" and "expired" in error["message"]
    assert emu.calls == []


def test_a_bad_signature_is_refused_even_for_the_owner(gw: GatewayProcess, emu: OpenAIEmulator, owner: str,
                                                      first_turn: tuple[str, str, bytes]) -> None:
    _, url, _ = first_turn
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    forged = url.replace(f"sig={sig}", "sig=" + ("A" if sig[0] != "A" else "B") + sig[1:])
    r = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {gw.key(account=owner)}"},
                   json={"model": "gpt-image-1", "prompt": "x", "image": [forged]}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "image[0]"
    assert emu.calls == []


def test_a_valid_url_is_a_capability_for_anyone(gw: GatewayProcess, emu: OpenAIEmulator) -> None:
    with client(gw, gw.key()) as c:
        made = c.images.generate(model="gpt-image-1", prompt="a lighthouse", response_format="url")
    url = made.data[0].url
    assert url is not None
    image = httpx.get(url).content
    emu.reset()
    with client(gw, gw.key()) as c:  # a key of another account, while the URL is still valid
        c.images.generate(model="gpt-image-1", prompt="the lighthouse at night", extra_body={"image": [url]})
    assert edits_received(emu) == [image]
