"""Headless Debian chromium driven by selenium, for the tests of what a browser sees (the admin
console, the OHIF viewer against the node's DICOMweb)."""

from __future__ import annotations

import importlib.util
import shutil
from typing import Any

from tests.support import require

# WebGL without a GPU: ANGLE on SwiftShader, which newer chromium allows only when asked.
SOFTWARE_WEBGL = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


def headless_chromium(*arguments: str, logs: bool = False) -> Any:
    """A started chromium session (the caller quits it); `logs` keeps its console and network
    logs for `driver.get_log`. Skips where chromium, chromedriver or selenium are missing
    (fails in CI)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    require(
        chromium is not None and chromedriver is not None,
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
    )
    require(importlib.util.find_spec("selenium") is not None, "selenium is not installed (the test extra)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--force-device-scale-factor=1",
        *arguments,
    ):
        options.add_argument(argument)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
