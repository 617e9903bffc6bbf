"""Headless Chromium for the dashboard's browser tests and scripts/ui_screenshots.py.

Debian's ``chromium`` and ``chromium-driver`` packages, with the driver's path given so that
Selenium Manager never tries to download one (the machines have no internet).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists() and shutil.which(path.name) is None:
            return f"{path} not found: install Debian's {package} (apt-get install -y {package})"
    return None


def chrome(profile: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container, where the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver_path = CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    return webdriver.Chrome(service=Service(str(driver_path)), options=options)


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width: int) -> None:
    """The whole page, not only the window: the window is made as tall as the page first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 140)  # the window's frame, even headless
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def replay(url: str, key: str, recordings: list[Path], machine: str) -> list[dict]:
    """Post recordings to the API one by one, as a machine's sensor would; their answers."""
    answers = []
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for path in recordings:
            response = client.post(
                "/v1/recordings",
                params={"machine": machine, "filename": path.name},
                content=path.read_bytes(),
                headers={"content-type": "text/plain"},
            )
            response.raise_for_status()
            answers.append(response.json())
    return answers
