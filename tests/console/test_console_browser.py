"""The web console in real Chromium: what a caller and an operator do in it, end to end, against a
gateway process with the embedded model."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx2 as httpx
from openai import OpenAI

from tests.console.conftest import ADMIN, sign_in
from tests.harness import GatewayProcess

PROMPT = "a large red circle on a blue background"


def caller_key(gw: GatewayProcess, name: str) -> str:
    """An account with 5.00 and a key of it, made through the admin API (Playwright's sync API
    keeps an event loop in this thread, so not through the harness's database helpers)."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    account = httpx.post(gw.url + "/admin/accounts", headers=admin, json={"name": name, "balance": "5.00"}).json()
    made = httpx.post(gw.url + "/admin/keys", headers=admin, json={"name": f"{name}-key", "account_id": account["id"]})
    return str(made.json()["key"])


def generate(page: Any, prompt: str = PROMPT) -> Any:
    page.get_by_label("Prompt").fill(prompt)
    before = page.locator("#gallery figure").count()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#gallery figure").nth(before).wait_for()
    return page.locator("#gallery figure").first


UNNAMED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
    .filter(el => el.type !== 'hidden' && !el.closest('[hidden]'))
    .filter(el => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
    .map(el => el.outerHTML)"""


def test_a_caller_signs_in_with_a_key_generates_and_sees_the_image(gw: GatewayProcess, page: Any) -> None:
    key = caller_key(gw, "alice")
    # By keyboard alone: the key, Enter; the prompt, Ctrl+Enter.
    page.goto(gw.url + "/")
    page.get_by_label("API key").focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.get_by_label("Prompt").focus()
    page.keyboard.type(PROMPT)
    page.keyboard.press("Control+Enter")
    page.locator("#gallery figure").first.wait_for()
    figure = page.locator("#gallery figure").first
    img = figure.get_by_role("img", name=re.compile("Generated image: " + PROMPT))
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.get_attribute("src").startswith(gw.url + "/files/")
    assert figure.get_by_role("link", name="Download").get_attribute("download")
    assert "imagegate-shapes" in figure.inner_text() and "cost 0.01 ·" in figure.inner_text()
    # The key lives only in the HttpOnly cookie: not in the page, its storage, its URL or its cookies.
    assert key not in page.content() and key not in page.url
    assert key not in page.evaluate("document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert key not in gw.logs()
    # Every control a screen reader reaches has a name.
    assert page.evaluate(UNNAMED_CONTROLS) == []
    page.get_by_role("link", name="My account").click()
    page.get_by_role("button", name="Reveal webhook secret").wait_for()
    assert page.evaluate(UNNAMED_CONTROLS) == []
    # The request history shows the picture just made (a stored image, loaded: not a broken icon).
    thumb = page.get_by_role("img", name="Request result image").first
    thumb.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())


RECORD_FORMS = """
const send = window.fetch;
window.fetch = (url, init = {}) => {
  if (init.body instanceof FormData) {
    window.__sent = {fields: [...init.body.keys()], image: init.body.get('image[]'), mask: init.body.get('mask')};
  }
  return send(url, init);
};
"""


def test_paint_a_mask_and_edit_the_result(gw: GatewayProcess, page: Any) -> None:
    page.add_init_script(RECORD_FORMS)
    sign_in(page, gw, caller_key(gw, "bob"))
    generate(page).get_by_role("button", name="Edit this").click()
    canvas = page.get_by_role("img", name="Mask painter over the image")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    page.get_by_label("Prompt").fill("a yellow star")
    page.get_by_role("button", name="Edit", exact=True).click()
    page.get_by_role("img", name="Generated image: a yellow star").wait_for()
    assert page.locator("#gallery figure").count() == 2
    # The edit went out with the image and a mask of its size: transparent where painted (the
    # middle), opaque where not (a corner).
    sent = page.evaluate("window.__sent")
    assert sent["fields"].count("image[]") == 1 and "mask" in sent["fields"]
    alpha = page.evaluate("""async () => {
        const sent = window.__sent;
        const [img, mask] = await Promise.all([createImageBitmap(sent.image), createImageBitmap(sent.mask)]);
        const c = new OffscreenCanvas(mask.width, mask.height), ctx = c.getContext('2d');
        ctx.drawImage(mask, 0, 0);
        const at = (x, y) => ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data[3];
        return {same: img.width === mask.width && img.height === mask.height,
                middle: at(mask.width / 2, mask.height / 2), corner: at(2, 2)};
    }""")
    assert alpha == {"same": True, "middle": 0, "corner": 255}


def test_an_async_generation_is_watched_to_the_end(gw: GatewayProcess, page: Any) -> None:
    sign_in(page, gw, caller_key(gw, "carol"))
    page.get_by_label("As a task (async, with progress)").check()
    page.get_by_label("Prompt").fill("a small green square")
    with page.expect_response(lambda r: "/v1/images/generations?async=true" in r.url) as submitted:
        page.get_by_role("button", name="Generate", exact=True).click()
    task_id = submitted.value.json()["task_id"]
    page.get_by_role("img", name="Generated image: a small green square").wait_for()
    assert f"Task {task_id[:8]}: SUCCESS 100%" in page.locator(".status").inner_text() or \
        page.locator("#progress").get_attribute("value") == "100"
    assert page.locator("#progress").evaluate("p => p.value") == 100


def test_a_streamed_generation_shows_partial_images_then_the_image(gw: GatewayProcess, page: Any) -> None:
    sign_in(page, gw, caller_key(gw, "gina"))
    page.get_by_label("Stream (partial images where the model streams)").check()
    page.get_by_label("Partial images to show").fill("2")
    page.get_by_label("Prompt").fill("a blue triangle")
    page.get_by_role("button", name="Generate", exact=True).click()
    img = page.get_by_role("img", name="Generated image: a blue triangle")
    img.wait_for()
    assert page.locator("#gallery").get_attribute("data-partials") == "2"
    assert page.get_by_role("img", name="Partial image (in progress)").count() == 0
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())


def test_a_bad_parameter_shows_the_apis_error_next_to_its_field(gw: GatewayProcess, page: Any) -> None:
    key = caller_key(gw, "dave")
    expected = httpx.post(gw.url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "imagegate-shapes", "prompt": PROMPT, "seed": 99999999999}).json()["error"]
    assert expected["param"] == "seed"
    sign_in(page, gw, key)
    page.get_by_label("Seed").fill("99999999999")
    page.get_by_label("Prompt").fill(PROMPT)
    page.get_by_role("button", name="Generate", exact=True).click()
    error = page.locator('.field[data-param="seed"] .field-error')
    error.wait_for()
    assert error.inner_text() == expected["message"]
    assert page.locator("#gallery figure").count() == 0


def _bar(page: Any, chart: str, label: str) -> int:
    bars = page.locator(f"#{chart} rect[data-label='{label}']")
    return int(bars.get_attribute("data-value")) if bars.count() else 0


def test_an_operator_creates_an_account_and_a_key_tops_up_and_sees_usage(gw: GatewayProcess, page: Any) -> None:
    sign_in(page, gw, ADMIN)
    page.get_by_role("heading", name="Operators").wait_for()
    page.get_by_label("Account name").fill("erin")
    page.get_by_label("Opening balance").fill("1.00")
    page.get_by_role("button", name="Create account").click()
    row = page.get_by_role("row").filter(has_text="erin")
    row.wait_for()
    assert row.locator(".balance").inner_text() == "1.00"
    assert page.evaluate(UNNAMED_CONTROLS) == []
    row.get_by_label("Amount for erin").fill("2.50")
    row.get_by_role("button", name="Top up").click()
    page.get_by_role("row").filter(has_text="erin").locator(".balance").filter(has_text="3.50").wait_for()

    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Key name").fill("erin-key")
    erin = page.locator("select[name=account_id] option", has_text="erin (").get_attribute("value")
    page.get_by_label("Account").select_option(erin)
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("ig-")
    page.get_by_role("row").filter(has_text="erin-key").wait_for()

    page.get_by_role("link", name="Usage").click()
    page.locator("#chart-account").wait_for()
    assert _bar(page, "chart-account", "erin") == 0
    OpenAI(base_url=gw.url + "/v1", api_key=key).images.generate(model="imagegate-shapes", prompt=PROMPT, n=2)
    page.reload()
    page.locator("#chart-account rect[data-label='erin']").wait_for()
    assert _bar(page, "chart-account", "erin") == 2

    page.get_by_role("link", name="Accounts").click()
    page.get_by_role("row").filter(has_text="erin").locator(".balance").filter(has_text="3.48").wait_for()
    page.get_by_role("link", name="Tasks", exact=True).click()
    page.get_by_role("heading", name="Failing webhook URLs").wait_for()

    # Channels, prices, the audit log (runtime configuration, #15B).
    page.get_by_role("link", name="Channels", exact=True).click()
    page.get_by_role("button", name="Test local").click()
    page.locator(".ops pre").filter(has_text='"ok": true').wait_for()
    assert page.evaluate(UNNAMED_CONTROLS) == []
    # A database channel is edited in place (the stored key kept), then removed.
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(gw.url + "/admin/channels", headers=admin, json={
        "name": "spare", "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-spare",
        "models": {"gpt-image-1": "gpt-image-1"}, "priority": 1})
    assert made.status_code == 201, made.text
    page.reload()
    page.get_by_role("button", name="Edit spare").click()
    assert page.get_by_label("provider").input_value() == "openai"
    page.get_by_label("priority").fill("7")
    page.get_by_role("button", name="Save channel").click()
    page.get_by_text("Saved spare.").wait_for()
    spare = httpx.get(gw.url + "/admin/channels/spare", headers=admin).json()
    assert (spare["priority"], spare["has_api_key"], spare["base_url"]) == (7, True, "http://127.0.0.1:9/v1")
    page.get_by_role("row").filter(has_text="spare").get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Edit spare").wait_for(state="detached")
    page.get_by_role("link", name="Prices", exact=True).click()
    page.get_by_label("Model", exact=True).fill("imagegate-shapes")
    page.get_by_label("Per image").fill("0.02")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Reset price of imagegate-shapes").wait_for()
    page.get_by_role("link", name="Audit log", exact=True).click()
    for action in ("price.set", "channel.test"):
        page.get_by_role("cell", name=action, exact=True).first.wait_for()


def test_a_caller_cannot_open_operator_pages(gw: GatewayProcess, page: Any) -> None:
    sign_in(page, gw, caller_key(gw, "frank"))
    assert page.get_by_role("link", name="Operators").is_hidden()
    page.goto(gw.url + "/console/#/operators/accounts")
    page.get_by_text("This page is for operators").wait_for()
    status = page.evaluate("fetch('/console/api/admin/accounts').then(r => r.status)")
    assert status == 403


def test_an_owner_manages_the_accounts_keys_and_an_operator_retries_a_webhook(
        gw: GatewayProcess, page: Any, browser: Any) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    account = httpx.post(gw.url + "/admin/accounts", headers=admin, json={"name": "gina", "balance": "5.00"}).json()
    owner = httpx.post(gw.url + "/admin/keys", headers=admin,
                       json={"name": "gina-owner", "account_id": account["id"], "owner": True}).json()["key"]
    hook = "http://127.0.0.1:9/hook"  # nobody listens: the delivery keeps failing
    r = httpx.post(gw.url + "/v1/images/generations", params={"async": "true", "webhook": hook}, timeout=30,
                   headers={"Authorization": f"Bearer {owner}"}, json={"model": "imagegate-shapes", "prompt": PROMPT})
    task_id = r.json()["task_id"]

    def deliveries() -> list[dict[str, Any]]:
        got = httpx.get(f"{gw.url}/v1/images/tasks/{task_id}/webhooks", headers={"Authorization": f"Bearer {owner}"})
        return list(got.json()["data"])

    sign_in(page, gw, owner)
    page.get_by_role("link", name="My account").click()
    row = page.get_by_role("row").filter(has_text=task_id[:12])
    row.wait_for()
    while not deliveries():  # the task finishes, then its delivery exists
        page.wait_for_timeout(100)
    page.reload()
    row.get_by_role("img", name="Task result image").wait_for()
    row.get_by_role("button", name=f"Details of {task_id[:8]}").click()
    page.get_by_role("region", name="Webhook deliveries").get_by_role("cell", name=hook).wait_for()

    # The owner's keys: create one (shown once), see it listed, revoke it; never itself.
    page.get_by_label("Key name").fill("gina-ci")
    page.get_by_label("Models").fill("imagegate-shapes")
    page.get_by_role("button", name="Create key").click()
    made = page.locator("#new-key").inner_text()
    as_made = {"Authorization": f"Bearer {made}"}
    assert [m["id"] for m in httpx.get(gw.url + "/v1/models", headers=as_made).json()["data"]] == ["imagegate-shapes"]
    page.get_by_role("button", name="Revoke gina-ci").click()
    page.get_by_role("row").filter(has_text="gina-ci").get_by_role("cell", name="revoked").wait_for()
    assert httpx.get(gw.url + "/v1/models", headers=as_made).status_code == 401
    assert page.get_by_role("button", name="Revoke gina-owner").count() == 0
    assert page.evaluate(UNNAMED_CONTROLS) == []

    # The operator inspects the task and sends its delivery again.
    ops = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        op = ops.new_page()
        op.set_default_timeout(20_000)
        sign_in(op, gw, ADMIN)
        op.get_by_role("link", name="Tasks", exact=True).click()
        op.get_by_role("button", name=f"Inspect {task_id[:8]}").click()
        (d,) = deliveries()
        op.get_by_role("button", name=f"Retry delivery {d['id'][4:12]}").click()
        op.get_by_text("The delivery is sent again now.").wait_for()
    finally:
        ops.close()
    entries = httpx.get(gw.url + "/admin/audit", headers=admin).json()["data"]
    assert any(e["action"] == "webhook.retry" and e["target"] == f"webhook_delivery:{d['id']}" for e in entries)
    deadline = time.monotonic() + 10
    while deliveries()[0]["attempts"] <= d["attempts"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert deliveries()[0]["attempts"] > d["attempts"]
