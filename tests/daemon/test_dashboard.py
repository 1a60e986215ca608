"""GET /ui in a real headless Chromium (Debian's `chromium`, driven by playwright): it loads without console
errors, its numbers match /metrics, its charts draw, and with an API token it asks for the token, keeps
it out of URLs and cookies, and refuses a wrong one."""

from __future__ import annotations

import shutil

import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.daemon.test_metrics import scrape, value, with_priced_cloud

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install "
                                "chromium; .ci/run does)")
# As this machine's notes say: no sandbox as root, and no background traffic to a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ask(n: int) -> dict:
    return {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": f"Say hi to number {n}."}],
            "max_tokens": 4, "temperature": 0}


async def until(read, expected, timeout_s: float = 15.0):
    """Poll ``read()`` until it equals ``expected`` (or ``expected(value)`` is true)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = await read()
        if (expected(got) if callable(expected) else got == expected):
            return got
        assert time.monotonic() < deadline, f"still {got!r}"
        await asyncio.sleep(0.2)


async def open_page(playwright, url: str):
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(url)
    return browser, page, problems


async def test_the_dashboard_shows_what_metrics_says(make_client):
    from playwright.async_api import async_playwright

    client = await make_client(with_priced_cloud(make_settings(cache={"enabled": True})))
    for n in (0, 1, 2, 0):  # the last is a cache hit
        assert (await client.post("/v1/chat/completions", json=ask(n))).status == 200
    samples = await scrape(client)
    async with async_playwright() as playwright:
        browser, page, problems = await open_page(playwright, str(client.make_url("/ui")))
        try:
            # (Polled from here: the page's CSP forbids eval, which playwright's wait_for_function uses.)
            await until(lambda: page.get_attribute("#dashboard", "data-requests"), "4")
            # Two polls at least: the charts have lines.
            await until(lambda: page.get_attribute("#chart-rate polyline", "points"),
                        lambda points: points is not None and len(points.split()) >= 2)
            routes = dict(await page.eval_on_selector_all(
                "#routes tbody tr", "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])"))
            assert routes == {"local": str(int(value(samples, "localllm_requests_total", route="local",
                                                       model=DEFAULT_MODEL, status="200"))),
                              "cache": "1"}
            assert await page.text_content("#hit-rate") == "25%"  # 1 hit in 4 lookups
            assert await page.text_content("#on-device") == "100%"
            assert "(estimated)" in await page.text_content("#energy")
            saved = value(samples, "localllm_cloud_equivalent_usd_total", priced_as="pricey")
            assert saved > 0 and await page.text_content("#saved") == f"${saved:.4f}"
            assert await page.text_content("#saved-label") == "saved against pricey"
            cloud_wh = value(samples, "localllm_cloud_equivalent_energy_joules_total") / 3600
            assert await page.text_content("#cloud-energy") == f"~{cloud_wh:.3f} Wh (estimated)"
            assert DEFAULT_MODEL in await page.text_content("#models")
            assert await page.text_content("#status") == "live"
            assert problems == []
        finally:
            await browser.close()


async def test_with_a_token_the_page_asks_for_it_and_keeps_it_out_of_urls_and_cookies(make_client):
    from playwright.async_api import async_playwright

    client = await make_client(make_settings(), api_token="dashboard-token-5678")
    assert (await client.get("/ui")).status == 200  # the page itself holds no data
    assert (await client.get("/ui/ui.js")).headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert (await client.get("/ui/secrets.txt")).status == 401  # only the page's own files are open
    async with async_playwright() as playwright:
        browser, page, _ = await open_page(playwright, str(client.make_url("/ui")))
        try:
            await page.wait_for_selector("#token-form:not([hidden])", timeout=15_000)
            await page.fill("#token", "wrong-token")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#token-error:not([hidden])", timeout=15_000)
            await page.fill("#token", "dashboard-token-5678")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#dashboard:not([hidden])", timeout=15_000)
            assert "dashboard-token" not in page.url
            assert await page.evaluate("document.cookie") == ""
            assert await page.text_content("#status") == "live"
        finally:
            await browser.close()
