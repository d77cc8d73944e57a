"""The drawing page in a real headless Chromium: draw digits with the mouse, read the prediction.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them), the selenium
package, and the real MNIST (a quick `fast` run is trained); skipped when any is missing.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _needs_browser() -> Any:
    """Skip without Chromium, its driver, selenium or uvicorn; uvicorn otherwise."""
    if not Path(CHROMIUM).exists() or not (Path(CHROMEDRIVER).exists() or shutil.which("chromedriver")):
        pytest.skip(f"{CHROMIUM} or chromedriver not installed (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium")
    return pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server (uvicorn in a thread) on a free 127.0.0.1 port, serving a quick real-MNIST run."""
    import os

    _needs_browser()
    data = os.environ.get("MNISTLAB_DATA", "").strip()
    if not data or not (Path(data) / "mnist").is_dir():
        pytest.skip("MNISTLAB_DATA with the real MNIST is needed to train a model worth drawing for")

    import mnistlab

    run = mnistlab.train(mnistlab.TrainConfig(model="fast", data_dir=data, out=str(tmp_path_factory.mktemp("runs")),
                                              progress="quiet", plots=False))
    yield from _serving(run.path)


def _serving(run_path: Path) -> Iterator[str]:
    """Serve the run with uvicorn in a thread on a free port until the generator is closed."""
    import uvicorn

    from mnistlab.serve import build_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(run_path), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server_url: str) -> Iterator[Any]:
    yield from _chromium(server_url)


def _chromium(url: str) -> Iterator[Any]:
    """A headless Chromium on `url`, quit when the generator is closed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=options)
    try:
        driver.get(url + "/")
        yield driver
    finally:
        driver.quit()


def draw(driver: Any, strokes: list[list[tuple[int, int]]]) -> None:
    """Draw polylines on the 280x280 canvas with real mouse events (offsets from the canvas centre)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "pad")
    for points in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = points[0]
        actions.move_to_element_with_offset(canvas, x0 - 140, y0 - 140).click_and_hold()
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            steps = 6  # several small moves per segment, as a hand makes
            for i in range(1, steps + 1):
                actions.move_to_element_with_offset(
                    canvas, round(xa + (xb - xa) * i / steps) - 140, round(ya + (yb - ya) * i / steps) - 140
                )
        actions.release().perform()


def wait_prediction(driver: Any, expected: str, timeout: float = 10) -> str:
    """Wait until the page shows `expected` (returns what it shows at the end)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = driver.find_element(By.ID, "prediction").text.strip()
        if shown == expected:
            return shown
        time.sleep(0.1)
    return shown


def clear(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "clear").click()
    assert driver.find_element(By.ID, "prediction").text.strip() == ""


@pytest.mark.parametrize(
    "digit, strokes",
    [
        ("1", [[(140, 40), (140, 240)]]),
        ("7", [[(70, 50), (210, 50), (120, 240)]]),
    ],
)
def test_draw_digit(browser: Any, digit: str, strokes: list[list[tuple[int, int]]]) -> None:
    from selenium.webdriver.common.by import By

    clear(browser)
    draw(browser, strokes)
    shown = wait_prediction(browser, digit)
    assert shown == digit, f"drew a {digit}, the page shows {shown!r}"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert len(bars) == 10
    assert browser.find_element(By.CSS_SELECTOR, "#bars .bar.top .label").text == digit
    assert browser.find_element(By.ID, "status").text == ""


def test_clear_resets(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    clear(browser)
    draw(browser, [[(140, 40), (140, 240)]])
    assert wait_prediction(browser, "1") == "1"
    clear(browser)
    assert browser.find_element(By.ID, "confidence").text == ""


def test_colour_run_page_uploads_a_picture(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A colour run's page has no drawing pad but a file upload; the prediction shown is the model's."""
    from selenium.webdriver.common.by import By

    _needs_browser()
    import mnistlab
    from mnistlab.data.synthetic import write_colour_folder
    from mnistlab.predict import Predictor

    base = tmp_path_factory.mktemp("colour-page")
    root = write_colour_folder(base / "shapes", n_train=200, n_test=20, size=16)
    run = mnistlab.train(mnistlab.TrainConfig(model="cnn-bn", dataset=f"folder:{root}", image_size=16, epochs=3,
                                              out=str(base / "runs"), progress="quiet", plots=False))
    picture = sorted((root / "test").rglob("*.png"))[0]
    expected = Predictor.from_run(run.path).predict_paths([picture])[0][0].prediction
    url_gen = _serving(run.path)
    driver_gen = _chromium(next(url_gen))
    driver = next(driver_gen)
    try:
        assert not driver.find_element(By.ID, "pad").is_displayed()
        assert driver.find_element(By.ID, "heading").text == "Classify a picture"
        driver.find_element(By.ID, "file").send_keys(str(picture))
        assert wait_prediction(driver, expected) == expected
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        assert driver.find_element(By.ID, "status").text == ""
    finally:
        driver_gen.close()
        url_gen.close()
