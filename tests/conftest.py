"""Shared fixtures.

``market_mini``: the 854-image Market-1501 excerpt that sits beside the project in CI
(``../shared/data/market1501-mini``, or the folder named by ``RRID_MARKET_MINI``).
Tests that use it skip with a reason on a fresh clone that lacks it.

``chromium`` / ``browser``: the system Chromium, and Playwright driving it (tests/page_checks.py);
without it a test skips with a one-line hint, and fails under CI=true.
"""


import sys
import tempfile

import pytest

import rrid.book
import rrid.paths
import rrid.runtime
from page_checks import INSTALL_CHROMIUM, find_chromium, playwright_flags, under_ci


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test drew (pyplot keeps every open figure alive and warns past 20)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def market_mini():
    path = rrid.paths.market_mini()
    if path is None:
        pytest.skip("needs market1501-mini (../shared/data/market1501-mini or $RRID_MARKET_MINI); absent on a fresh clone")
    return path


SYNTHETIC_SMALL = dict(seed=0, num_train_ids=12, num_test_ids=12, images_per_id=6, num_junk=3, num_distractors=4)


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A small synthetic set (12 train / 12 test identities, 6 images each, 3 junk, 4 distractors).

    Market-1501 layout: read it with ``rrid.data.Market1501(synthetic_small)``.
    """
    from rrid.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("synthetic") / "small", **SYNTHETIC_SMALL)


@pytest.fixture(scope="session")
def chromium():
    """Chromium, or one skip line saying how to install it; under CI=true a missing one fails."""
    path = find_chromium()
    if path is None:
        if under_ci():
            pytest.fail(f"chromium is missing under CI=true: {INSTALL_CHROMIUM}")
        pytest.skip(f"chromium is not installed: {INSTALL_CHROMIUM}")
    return path


@pytest.fixture(scope="session")
def browser(chromium):
    """Playwright's Chromium API on the system chromium (``playwright install`` is never needed)."""
    from playwright.sync_api import sync_playwright  # only the tests that open pages need it

    with tempfile.TemporaryDirectory(prefix="rrid-playwright-") as profile, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=playwright_flags(profile))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    CI's 2 cores are busy with other jobs, and one thread avoids oversubscribing them."""
    with rrid.runtime.threads(1):
        yield
