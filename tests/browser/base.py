"""A real Chromium driving the admin, the way Django tests its own admin.

``BrowserTestCase`` is a ``StaticLiveServerTestCase`` (the admin's CSS and
JavaScript are served from the apps' static folders, no collectstatic) with one
headless Chromium per class, started from Debian's ``chromium`` and
``chromium-driver`` at fixed paths so Selenium Manager never downloads a
browser or a driver. When they are missing the tests fail, saying what to
install; they are never skipped.

The database: a ``StaticLiveServerTestCase`` is a ``TransactionTestCase``, so
what a test writes is committed and the tables are flushed after each test. On
SQLite the test database is a file (``DATABASES["default"]["TEST"]["NAME"]`` in
the settings, one per run), not memory: the live server's request threads, and
the dispatcher and worker processes that ``tests.e2e.conftest.start_stack``
starts, open it by name and see the same rows as the test.

When a test fails (in ``setUp``, the test itself, or a wait that timed out),
the page is saved at that moment, before any cleanup navigates away: a PNG
screenshot, the page's HTML and the browser console, named after the test, in
``$BROWSER_SCREENSHOTS`` or ``test-artifacts/screenshots/`` (git-ignored). The
failure's report names the files.
"""

from __future__ import annotations

import os
import secrets
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from selenium.webdriver import Chrome, ChromeOptions, ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1000)

T = TypeVar("T")


def screenshot_dir() -> Path:
    return Path(os.environ.get("BROWSER_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")


def start_chromium() -> Chrome:
    """A headless Chromium from Debian's packages; a clear error if they are not installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if missing:
        raise RuntimeError(
            f"The browser tests need Debian's chromium and chromium-driver; missing: "
            f"{', '.join(missing)}. Install them with "
            "`apt-get install -y chromium chromium-driver` (.ci/run does when they are missing)."
        )
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",  # a small /dev/shm in containers crashes tabs
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))


class BrowserTestCase(StaticLiveServerTestCase):
    """One Chromium per class; each test starts logged in to the admin as a superuser."""

    selenium: ClassVar[Chrome]
    #: Seconds a wait lasts before the test fails (and its page is saved).
    timeout: ClassVar[float] = 10
    username = "admin"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # starts the live server and registers its cleanup
        cls.selenium = start_chromium()
        cls.selenium.implicitly_wait(0)  # waits are explicit: wait_until and friends
        # Class cleanups run last in, first out: the browser quits before the live server's
        # thread is joined, so a connection it keeps open cannot hold the join up.
        cls.addClassCleanup(cls.selenium.quit)

    def setUp(self) -> None:
        super().setUp()
        self.password = secrets.token_urlsafe(12)
        self.user = User.objects.create_superuser(
            self.username, f"{self.username}@example.com", self.password
        )
        # The tables are flushed after each test, sessions included: log in again.
        self.admin_login()

    # --- Failure capture ---------------------------------------------------------------

    def _callSetUp(self) -> None:
        with self._saved_page_on_failure():
            super()._callSetUp()  # type: ignore[misc]  # unittest's hook, not in its stubs

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        with self._saved_page_on_failure():
            super()._callTestMethod(method)  # type: ignore[misc]

    @contextmanager
    def _saved_page_on_failure(self) -> Iterator[None]:
        try:
            yield
        except (KeyboardInterrupt, SystemExit, unittest.SkipTest, pytest.skip.Exception):
            raise
        except BaseException as exc:  # assertions, timeouts, and pytest.fail() alike
            exc.add_note(self.save_page(f"{type(self).__name__}.{self._testMethodName}"))
            raise

    def save_page(self, name: str) -> str:
        """Save a screenshot, the HTML and the console of the current page; say where."""
        folder = screenshot_dir()
        png, html, console = (folder / f"{name}{suffix}" for suffix in (".png", ".html", ".log"))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.selenium.save_screenshot(str(png))
            html.write_text(self.selenium.page_source)
            entries = self.selenium.get_log("browser")  # type: ignore[no-untyped-call]
            console.write_text("\n".join(f"{e['level']} {e['message']}" for e in entries))
        except Exception as error:  # noqa: BLE001  # the test's own failure is the one to report
            return f"Browser page at failure not saved: {error!r}"
        return f"Browser page at failure ({self.selenium.current_url}): {png} {html} {console}"

    # --- Navigation and waits ----------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.live_server_url}{path}"

    def open(self, path: str) -> None:
        """Load a page of the live server and wait until it is ready."""
        self.selenium.get(self.url(path))
        self.wait_page_ready()

    def wait_until(
        self, condition: Callable[[WebDriver], T], timeout: float | None = None, message: str = ""
    ) -> T:
        """Wait until ``condition(driver)`` is truthy and return it (a timeout fails the test)."""
        return WebDriverWait(self.selenium, timeout or self.timeout).until(condition, message)

    def wait_for(self, css: str, timeout: float | None = None) -> WebElement:
        """The element matching ``css`` once it is in the page."""
        return self.wait_until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)), timeout, f"no {css!r}"
        )

    def wait_until_visible(self, css: str, timeout: float | None = None) -> WebElement:
        element = self.wait_until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout, f"{css!r} hidden"
        )
        assert isinstance(element, WebElement)  # the condition is False until it holds
        return element

    def wait_until_invisible(self, css: str, timeout: float | None = None) -> None:
        self.wait_until(
            ec.invisibility_of_element_located((By.CSS_SELECTOR, css)),
            timeout,
            f"{css!r} still shown",
        )

    def wait_for_text(self, css: str, text: str, timeout: float | None = None) -> None:
        self.wait_until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text),
            timeout,
            f"{text!r} not in {css!r}",
        )

    def wait_page_ready(self, timeout: float | None = None) -> None:
        self.wait_until(
            lambda driver: driver.execute_script("return document.readyState") == "complete",
            timeout,
            "page not loaded",
        )

    @contextmanager
    def wait_page_loaded(self, timeout: float | None = None) -> Iterator[None]:
        """Wait until the page the block leads to (a click, a submit) has replaced this one."""
        old_page = self.selenium.find_element(By.TAG_NAME, "html")
        yield
        self.wait_until(ec.staleness_of(old_page), timeout, "the page did not change")
        self.wait_page_ready(timeout)

    def painted_pixels(self, canvas: WebElement) -> int:
        """How many pixels of a canvas are not blank (a chart drew something on it)."""
        return int(
            self.selenium.execute_script(
                "const c = arguments[0];"
                "const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                "let painted = 0;"
                "for (let i = 3; i < pixels.length; i += 4) { if (pixels[i]) painted++; }"
                "return painted;",
                canvas,
            )
        )

    # --- Forms ---------------------------------------------------------------------------

    def find(self, css: str) -> WebElement:
        return self.selenium.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.selenium.find_elements(By.CSS_SELECTOR, css)

    def fill(self, css: str, text: str) -> None:
        """Replace the value of the input or textarea matching ``css``."""
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def select_option(self, css: str, value: str) -> None:
        Select(self.find(css)).select_by_value(value)

    def submit(self, css: str = "input[type=submit]") -> None:
        """Click the button matching ``css`` and wait for the next page."""
        with self.wait_page_loaded():
            self.find(css).click()

    def admin_login(self) -> None:
        """Log in through the admin's login form and land on the admin index."""
        self.open("/admin/login/?next=/admin/")
        self.fill("#id_username", self.username)
        self.fill("#id_password", self.password)
        self.submit("#login-form input[type=submit]")
        self.wait_for("body.dashboard")
