"""The dashboard in headless Chromium against a live server with a trained model and replayed
recordings: sign-in, each page's figures against the JSON API's answers, a phone-sized window,
and screenshots (in the test's temporary folder)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from wearcast.api.main import create_app

from .browser import browser_missing, chrome, full_page_screenshot, replay
from .conftest import READER, LiveServer, api_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or ""),
]

WIDE, PHONE = (1280, 900), (390, 844)


@pytest.fixture(scope="module")
def server(model_home, tmp_path_factory):
    settings = api_settings(model_home, tmp_path_factory.mktemp("ui"), serve_model_version=1)
    data = model_home[1]
    with LiveServer(create_app(settings)) as live:
        # A whole run to failure (its failing bearing reaches the alarm) and part of another.
        replay(live.url, READER, sorted((data / "sim_run_01").glob("2004.*")), "press-1")
        replay(live.url, READER, sorted((data / "sim_run_02").glob("2004.*"))[:30], "press-2")
        yield live


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": READER}) as client:
        yield client


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    """Signed in through the login form, as a person would."""
    driver = chrome(tmp_path_factory.mktemp("chromium-profile"), *WIDE)
    try:
        driver.get(f"{server.url}/ui")
        assert "/ui/login" in driver.current_url  # no key yet: sent to the form
        driver.find_element("id", "key").send_keys(READER)
        driver.find_element("css selector", "form.login button").click()
        # A guard against a hang, not a timing assertion: the form posts, then redirects.
        WebDriverWait(driver, 60).until(EC.presence_of_element_located(("id", "fleet")))
        assert driver.current_url == f"{server.url}/ui"
        yield driver
    finally:
        driver.quit()


def _rows(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#fleet tbody tr')].map(tr => ({
            id: tr.dataset.bearing,
            ...Object.fromEntries([...tr.querySelectorAll('td[data-value]')].map(
                td => [td.classList[0], td.dataset.value])),
            low: tr.querySelector('td.rul').dataset.low,
            high: tr.querySelector('td.rul').dataset.high,
            text: tr.innerText}))"""
    )


def _number(value: str) -> float | None:
    return float(value) if value else None


def test_fleet_shows_every_bearing_as_the_api_answers_alarms_first(browser, server, api, shots):
    browser.get(f"{server.url}/ui")
    rows = _rows(browser)
    assert sorted(r["id"] for r in rows) == [f"press-{m}:{b}" for m in (1, 2) for b in (1, 2, 3, 4)]
    for row in rows:
        answer = api.get(f"/v1/bearings/{row['id']}").json()
        latest = answer["predictions"][-1]
        assert row["state"] == answer["alarm_state"]
        assert _number(row["wear"]) == latest["wear"]
        assert _number(row["health"]) == latest["health"]
        assert _number(row["rul"]) == answer["rul_h"]
        assert _number(row["low"]) == answer["rul_low_h"]
        assert _number(row["high"]) == answer["rul_high_h"]
        assert row["last"] == latest["timestamp"]
        assert row["state"] in row["text"]
    states = [r["state"] for r in rows]
    assert "alarm" in states, "the replayed failure never reached the alarm"
    rank = {"alarm": 0, "watch": 1, "ok": 2}
    assert [rank[s] for s in states] == sorted(rank[s] for s in states)
    full_page_screenshot(browser, shots / "fleet.png", WIDE[0])
    # Sorting by a column keeps the alarms first.
    browser.find_element("link text", "Wear").click()
    WebDriverWait(browser, 60).until(EC.url_contains("sort=wear"))
    resorted = _rows(browser)
    assert sorted(r["id"] for r in resorted) == sorted(r["id"] for r in rows)
    assert resorted[0]["state"] == "alarm"


def test_bearing_page_shows_the_alarmed_bearings_answer_and_charts(browser, server, api, shots):
    browser.set_window_size(*WIDE)
    browser.get(f"{server.url}/ui")
    first = _rows(browser)[0]
    browser.find_element("link text", first["id"]).click()
    WebDriverWait(browser, 60).until(EC.presence_of_element_located(("id", "bearing-id")))
    answer = api.get(f"/v1/bearings/{first['id']}", params={"limit": 5000}).json()
    text = {
        key: browser.find_element("id", key).get_attribute("data-value")
        for key in ("rul", "wear", "health", "last")
    }
    assert browser.find_element("id", "bearing-id").text == first["id"]
    assert browser.find_element("id", "state").text == answer["alarm_state"]
    assert _number(text["rul"]) == answer["rul_h"]
    assert _number(text["wear"]) == answer["predictions"][-1]["wear"]
    assert _number(text["health"]) == answer["predictions"][-1]["health"]
    assert text["last"] == answer["predictions"][-1]["timestamp"]
    assert browser.find_element("id", "model-version").text == str(
        answer["predictions"][-1]["model_version"]
    )
    episodes = browser.find_elements("css selector", "#episodes tbody tr")
    assert len(episodes) == len(answer["episodes"]) > 0
    for chart in ("trajectory", "spectra"):  # drawn: the browser decoded an image of some size
        width = browser.execute_script(f"return document.getElementById('{chart}').naturalWidth")
        assert width > 300, chart
    assert "BPFO" in browser.page_source and "BPFI" in browser.page_source
    full_page_screenshot(browser, shots / "bearing.png", WIDE[0])


def test_model_page_shows_the_served_version_and_its_metrics(browser, server, api, shots):
    browser.set_window_size(*WIDE)
    browser.get(f"{server.url}/ui/model")
    models = api.get("/v1/models").json()
    assert browser.find_element("id", "served").text == (
        f"{models['loaded']['name']} version {models['loaded']['version']}"
    )
    for version in models["versions"]:
        for name, value in version["metrics"].items():
            cell = browser.find_element(
                "css selector", f'tr[data-version="{version["version"]}"] td[data-metric="{name}"]'
            )
            assert float(cell.get_attribute("data-value")) == value
    full_page_screenshot(browser, shots / "model.png", WIDE[0])


def test_pages_fit_a_phone(browser, server, shots):
    browser.set_window_size(*PHONE)
    for name, page in (
        ("fleet", "/ui"),
        ("bearing", "/ui/bearings/press-1:1"),
        ("model", "/ui/model"),
    ):
        browser.set_window_size(*PHONE)
        browser.get(server.url + page)
        # Wide tables and charts scroll inside their box; the page never scrolls sideways.
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, page
        full_page_screenshot(browser, shots / f"{name}_phone.png", PHONE[0])
