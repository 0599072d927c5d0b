"""Draw the README's console screenshots (docs/screenshots/*.png) from a real gateway and Chromium:

    .venv/bin/python -m tests.console.screenshots

Not a test; rerun it when a page changes."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import httpx2 as httpx
from openai import OpenAI
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.console.conftest import ADMIN, ARGS, CHROMIUM, sign_in
from tests.harness import start_gateway

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def save(page: Any, name: str, full: bool = False) -> None:
    png = page.screenshot(full_page=full)
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    img.save(OUT / f"{name}.png", optimize=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), {"local_model": True, "admin_token": ADMIN, "prices": {"imagegate-shapes": 0.01}})
        try:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            acct = httpx.post(gw.url + "/admin/accounts", headers=admin,
                              json={"name": "studio", "balance": "20"}).json()
            key = httpx.post(gw.url + "/admin/keys", headers=admin,
                             json={"name": "studio-key", "account_id": acct["id"], "owner": True}).json()["key"]
            client = OpenAI(base_url=gw.url + "/v1", api_key=key)
            for prompt in ("a yellow star on the left", "a small green square"):
                client.images.generate(model="imagegate-shapes", prompt=prompt)
            for prompt in ("a red circle at the top", "a blue triangle on the right"):  # two async tasks
                httpx.post(gw.url + "/v1/images/generations", params={"async": "true"},
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "imagegate-shapes", "prompt": prompt}, timeout=30)
            httpx.post(gw.url + "/v1/keys", headers={"Authorization": f"Bearer {key}"},
                       json={"name": "ci-bot", "models": ["imagegate-shapes"], "rpm": 30})
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-US")
                page.goto(gw.url + "/")
                page.get_by_label("API key").wait_for()
                save(page, "sign-in")
                sign_in(page, gw, key)
                for prompt in ("a large red circle on a blue background", "a blue triangle at the top"):
                    page.get_by_label("Prompt").fill(prompt)
                    page.get_by_role("button", name="Generate", exact=True).click()
                    page.get_by_role("img", name=f"Generated image: {prompt}").wait_for()
                page.locator("#gallery figure").first.get_by_role("button", name="Edit this").click()
                canvas = page.get_by_role("img", name="Mask painter over the image")
                canvas.scroll_into_view_if_needed()
                box = canvas.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.4)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=10)
                page.mouse.up()
                page.get_by_label("Prompt").fill("a yellow star")
                page.evaluate("window.scrollTo(0, 0)")
                save(page, "playground", full=True)
                page.goto(gw.url + "/console/#/account")
                page.locator("#chart-model").wait_for()
                page.get_by_role("img", name="Task result image").nth(1).wait_for()
                page.get_by_role("button", name="Details of").first.click()
                page.get_by_role("region", name="Webhook deliveries").wait_for()
                page.get_by_role("cell", name="ci-bot", exact=True).wait_for()
                save(page, "account", full=True)
                page.get_by_label("Language").select_option("zh")
                page.get_by_role("heading", name="我的账户").wait_for()
                save(page, "account-zh")
                page.get_by_label("语言").select_option("en")
                page.get_by_role("button", name="Sign out").click()
                sign_in(page, gw, ADMIN)
                page.get_by_role("heading", name="Operators").wait_for()
                page.locator("table").first.wait_for()
                save(page, "operators-accounts")
                page.goto(gw.url + "/console/#/operators/usage")
                page.locator("#chart-account").wait_for()
                save(page, "operators-usage", full=True)
                page.goto(gw.url + "/console/#/operators/channels")
                page.get_by_role("button", name="Test local").click()
                page.locator(".ops pre").filter(has_text='"ok": true').wait_for()
                save(page, "operators-channels")
                phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
                sign_in(phone, gw, key)
                phone.get_by_label("Prompt").wait_for()
                save(phone, "playground-phone")
                browser.close()
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
