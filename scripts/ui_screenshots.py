"""Screenshots of the dashboard for the docs: docs/img/ui_fleet.png, ui_bearing.png, ui_model.png.

    python scripts/ui_screenshots.py [--out docs/img]

Trains the API tests' two model versions on two simulated runs, serves them with a reader key
on loopback, replays three other simulated runs (other seeds: recordings the model never saw)
as three machines, and photographs each page in headless Chromium (Debian's chromium and
chromium-driver). The live server, the model versions and the browser are the tests' own
(tests/api/conftest.py, tests/ui/browser.py), so the pictures show what the tests check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' server and browser helpers

from api.conftest import CONFIG_V1, CONFIG_V2, READER, LiveServer, api_settings  # noqa: E402
from ui.browser import browser_missing, chrome, full_page_screenshot, replay  # noqa: E402
from wearcast import registry  # noqa: E402
from wearcast.api.main import create_app  # noqa: E402
from wearcast.config import Settings  # noqa: E402
from wearcast.dataset import featurize  # noqa: E402
from wearcast.retrain import train_challenger  # noqa: E402
from wearcast.simulate import plan_simulation, simulate  # noqa: E402

WIDTH = 1280
# (machine, run, recordings replayed): one failure replayed to the end, two still running.
MACHINES = (("press-1", "site_01", 60), ("press-2", "site_02", 40), ("fan-3", "site_03", 25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    if (missing := browser_missing()) is not None:
        sys.exit(missing)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(home=root / "home", workers=2)
        simulate(plan_simulation(settings, runs=2, recordings=60, seed=6), root / "train")
        featurize(root / "train", root / "table", settings)
        for config in (CONFIG_V1, CONFIG_V2):
            train_challenger(settings, root / "table", config=config)
        registry.promote(registry.connect(settings), settings, 1, "screenshots")
        plan = plan_simulation(settings, runs=3, recordings=60, seed=11, run_prefix="site")
        simulate(plan, root / "site")
        served = api_settings((settings, root / "train"), root, serve_model_version=1)
        with LiveServer(create_app(served)) as live:
            for machine, run, count in MACHINES:
                recordings = sorted((root / "site" / run).glob("2004.*"))[:count]
                replay(live.url, READER, recordings, machine)
            driver = chrome(root / "profile", WIDTH, 900)
            try:
                driver.get(f"{live.url}/ui/login")
                driver.find_element("id", "key").send_keys(READER)
                driver.find_element("css selector", "form.login button").click()
                driver.find_element("id", "fleet")  # signed in, on the fleet page
                full_page_screenshot(driver, args.out / "ui_fleet.png", WIDTH)
                first = driver.find_element("css selector", "#fleet tbody tr").get_attribute(
                    "data-bearing"
                )
                driver.set_window_size(WIDTH, 900)
                driver.get(f"{live.url}/ui/bearings/{first}")
                full_page_screenshot(driver, args.out / "ui_bearing.png", WIDTH)
                driver.set_window_size(WIDTH, 900)
                driver.get(f"{live.url}/ui/model")
                full_page_screenshot(driver, args.out / "ui_model.png", WIDTH)
            finally:
                driver.quit()
    print(f"wrote ui_fleet.png, ui_bearing.png, ui_model.png to {args.out}")


if __name__ == "__main__":
    main()
