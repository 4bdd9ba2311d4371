"""The prediction browser in a real browser: notebook 05 run in JupyterLab and in the classic
Notebook interface, driven by headless Chromium (tests/test_browser.py).

For each front end the test starts a Jupyter server on localhost (smoke profile, a private
cache and runs folder, a copy of notebook 05), opens the notebook in Chromium through
Selenium, runs every cell, then moves the image slider, moves the threshold slider and
switches the model, and checks after each action that the figure's title text and its
image changed. A screenshot of each front end goes to ``build/browser/``.

It runs with whatever ipywidgets the environment has: CI runs it twice, in the project's
environment (ipywidgets 8) and in the Colab-matched one (ipywidgets 7.7.1, the classic
interface being Notebook 6.5.7, as in Colab); see ``tools/colab_check.py``.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium``. When they are missing
the test skips, unless ``$DAGM_REQUIRE_BROWSER`` is set (CI sets it), which turns the skip
into a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_compare_and_inspect_edges.ipynb"
SHOTS = REPO / "build" / "browser"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
RUN_ALL_TIMEOUT_S = 600
ACTION_TIMEOUT_S = 60


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _missing() -> str | None:
    if not (CHROMIUM and CHROMEDRIVER):
        return "Debian's chromium and chromium-driver are not installed"
    if _version("selenium") is None:
        return "selenium is not installed"
    if _version("jupyterlab") is None:
        return "jupyterlab is not installed"
    return None


def _classic_server() -> list[str] | None:
    """The command that serves the classic Notebook interface: Notebook 6 itself, else nbclassic."""
    notebook = _version("notebook")
    if notebook and int(notebook.split(".")[0]) < 7:
        return [sys.executable, "-m", "notebook"]
    if _version("nbclassic"):
        return [sys.executable, "-m", "nbclassic"]
    return None


@pytest.fixture(autouse=True)
def _browser_tools():
    reason = _missing()
    if reason:
        if os.environ.get("DAGM_REQUIRE_BROWSER"):
            pytest.fail(f"$DAGM_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(frontend: str, root: Path, tmp: Path):
    """Start a Jupyter server for ``frontend`` ("lab" or "classic"); return (process, url, log)."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the DOM (JupyterLab 4 otherwise renders only the cells in view)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = tmp / "lab-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "DAGM_PROFILE": "smoke",
        "DAGM_EXPECT_PROFILE": "smoke",
        "DAGM_HOME": str(tmp / "home"),
        "DAGM_RUNS": str(tmp / "runs"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "MPLBACKEND": "Agg",
    }
    env.pop("DAGM_HEADLESS", None)
    env.pop("DAGM_DIR", None)
    common = [
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--allow-root",  # CI runs as root
        f"--notebook-dir={root}",
    ]
    if frontend == "lab":
        cmd = [sys.executable, "-m", "jupyterlab", *common, "--LabApp.expose_app_in_browser=True"]
        cmd += [f"--ServerApp.token={token}"]
        path = f"lab/tree/{NOTEBOOK.name}"
    else:
        cmd = [*_classic_server(), *common]
        notebook6 = cmd[2] == "notebook"
        cmd += [f"--NotebookApp.token={token}" if notebook6 else f"--ServerApp.token={token}"]
        path = f"notebooks/{NOTEBOOK.name}"
    log = open(tmp / f"{frontend}-server.log", "w")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the {frontend} server exited: {(tmp / f'{frontend}-server.log').read_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError(f"the {frontend} server did not start in 60 s")
    return proc, f"http://127.0.0.1:{port}/{path}?token={token}", log


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console lines, for failure messages
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# JavaScript that starts "run all" and reports progress, per front end
RUN_ALL = {
    "lab": "window.jupyterapp.commands.execute('notebook:run-all-cells');",
    "classic": "Jupyter.notebook.execute_all_cells();",
}
PROGRESS = {
    # [code cells, cells executed, error text or null, kernel busy]
    "lab": """
        const panel = window.jupyterapp.shell.currentWidget;
        if (!panel || !panel.content || !panel.sessionContext.session) { return null; }
        const cells = panel.content.model.cells;
        let code = 0, done = 0, error = null;
        for (let i = 0; i < cells.length; i++) {
            const cell = cells.get(i);
            if (cell.type !== 'code') { continue; }
            code += 1;
            if (cell.executionCount) { done += 1; }
            for (const out of cell.outputs.toJSON()) {
                if (out.output_type === 'error') { error = out.ename + ': ' + out.evalue; }
            }
        }
        const kernel = panel.sessionContext.session.kernel;
        return [code, done, error, kernel ? kernel.status !== 'idle' : true];
    """,
    "classic": """
        if (!window.Jupyter || !Jupyter.notebook || !Jupyter.notebook.kernel) { return null; }
        let code = 0, done = 0, error = null;
        for (const cell of Jupyter.notebook.get_cells()) {
            if (cell.cell_type !== 'code') { continue; }
            code += 1;
            const n = cell.input_prompt_number;
            if (n !== null && n !== undefined && n !== '*') { done += 1; }
            for (const out of cell.output_area.outputs) {
                if (out.output_type === 'error') { error = out.ename + ': ' + out.evalue; }
            }
        }
        return [code, done, error, Jupyter.notebook.kernel_busy || false];
    """,
}


KERNEL_READY = {
    "lab": """
        const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const k = p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel;
        return !!(k && k.status === 'idle');
    """,
    # the widget manager must have registered its comm target before any cell runs, or the
    # kernel's widget messages arrive before anything can render them
    "classic": """
        const k = window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel;
        return !!(k && k.is_connected() && k.comm_manager && k.comm_manager.targets['jupyter.widget']);
    """,
}


#: seconds to let the widget manager finish asking the idle kernel for existing widgets: if "run
#: all" starts first, that request waits behind the cells and is answered after the browser
#: exists, and the manager then re-creates its models and the view goes blank
#: (ipywidgets 7: "Control comm was closed too early")
WIDGET_MANAGER_SETTLE_S = 3


def _run_all(driver, frontend: str) -> None:
    _wait_for(lambda: driver.execute_script(KERNEL_READY[frontend]), "the notebook's kernel", timeout=120)
    time.sleep(WIDGET_MANAGER_SETTLE_S)
    driver.execute_script(RUN_ALL[frontend])
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while True:
        time.sleep(2)
        state = driver.execute_script(PROGRESS[frontend])
        if state:
            code, done, error, busy = state
            assert error is None, f"{frontend}: a cell of {NOTEBOOK.name} failed: {error}"
            if code and done == code and not busy:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{frontend}: run-all did not finish in {RUN_ALL_TIMEOUT_S} s: {state}")


def _wait_for(predicate, what: str, timeout: float = ACTION_TIMEOUT_S):
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StaleElementReferenceException:  # the front end re-rendered the output: look again
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


#: JavaScript: the outputs of the cell that displays the browser, as JSON text (for error messages)
BROWSER_CELL_OUTPUTS = {
    "lab": """
        const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
        for (let i = 0; i < cells.length; i++) {
            const cell = cells.get(i);
            if (cell.type === 'code' && cell.sharedModel.getSource().includes('display(browser)')) {
                return JSON.stringify(cell.outputs.toJSON()).slice(0, 2000);
            }
        }
        return 'no cell displays the browser';
    """,
    "classic": """
        for (const cell of Jupyter.notebook.get_cells()) {
            if (cell.cell_type === 'code' && cell.get_text().includes('display(browser)')) {
                return JSON.stringify(cell.output_area.outputs).slice(0, 2000);
            }
        }
        return 'no cell displays the browser';
    """,
}


class Browser:
    """The prediction browser as the page shows it."""

    def __init__(self, driver, frontend: str):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        try:
            root = _wait_for(
                lambda: driver.find_elements(By.CSS_SELECTOR, ".dagm-prediction-browser"),
                "the prediction browser widget to appear",
            )[0]
        except AssertionError as exc:
            outputs = driver.execute_script(BROWSER_CELL_OUTPUTS[frontend])
            console = [e["message"][:300] for e in driver.get_log("browser")]
            raise AssertionError(f"{exc}; the cell's outputs: {outputs}; console errors: {console}") from None
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", root)

    @property
    def root(self):
        """The widget's element, found again each time: a front end may re-render an output area
        (the classic Notebook does when later cells print), which leaves old references stale."""
        return _wait_for(
            lambda: self.driver.find_elements(self.by.CSS_SELECTOR, ".dagm-prediction-browser"),
            "the prediction browser widget",
        )[0]

    def title(self) -> str:
        return self.root.find_element(self.by.CSS_SELECTOR, ".dagm-browser-title").text

    def image(self) -> bytes:
        def loaded() -> bytes | None:
            img = self.root.find_elements(self.by.CSS_SELECTOR, "img")
            if img and self.driver.execute_script("return arguments[0].complete", img[0]):
                return img[0].screenshot_as_png
            return None

        return _wait_for(loaded, "the figure's image to load")

    def state(self) -> tuple[str, bytes]:
        return _wait_for(self.title, "the figure's title"), self.image()

    def slider_handle(self, position: int):
        sliders = self.root.find_elements(self.by.CSS_SELECTOR, ".widget-slider")
        assert len(sliders) == 2, f"expected the image and threshold sliders, found {len(sliders)}"
        # ipywidgets 8 draws sliders with noUiSlider, ipywidgets 7 with jQuery UI
        return sliders[position].find_element(self.by.CSS_SELECTOR, ".noUi-handle, .ui-slider-handle")

    def move_slider(self, position: int, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        handle = self.slider_handle(position)
        ActionChains(self.driver).move_to_element(handle).click().send_keys(key).perform()

    def choose_model(self, name: str) -> None:
        buttons = self.root.find_elements(self.by.CSS_SELECTOR, "button")
        match = [b for b in buttons if b.text.strip() == name]
        assert match, f"no {name!r} model button among {[b.text for b in buttons]}"
        match[0].click()


def _check_changes(browser: Browser, action, expect_in_title: str, what: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    before_title, before_image = browser.state()
    try:
        action()
    except StaleElementReferenceException:  # re-rendered between finding the control and using it
        action()
    title = _wait_for(
        lambda: (t := browser.title()) != before_title and t, f"the title to change after {what}"
    )
    assert expect_in_title in title, f"after {what} the title reads {title!r}"
    image = _wait_for(
        lambda: (i := browser.image()) != before_image and i, f"the image to change after {what}"
    )
    assert image != before_image


@pytest.mark.parametrize("frontend", ["lab", "classic"])
def test_slider_moves_redraw_the_figure_in_a_real_browser(frontend, tmp_path):
    from selenium.webdriver.common.keys import Keys

    if frontend == "classic" and _classic_server() is None:
        message = "neither Notebook 6 nor nbclassic is installed: no classic interface to test"
        if os.environ.get("DAGM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    proc, url, log = _start_server(frontend, root, tmp_path)
    driver = None
    widgets = _version("ipywidgets")
    shot = SHOTS / f"{frontend}-ipywidgets{widgets}.png"
    try:
        driver = _driver()
        driver.get(url)
        _run_all(driver, frontend)
        browser = Browser(driver, frontend)
        title = browser.title()
        assert title.startswith("test image 0,") and "model at threshold" in title, title
        _check_changes(
            browser,
            lambda: browser.move_slider(0, Keys.ARROW_RIGHT),
            "test image 1,",
            "moving the image slider",
        )
        threshold = float(browser.title().split("threshold ")[1].split(":")[0])
        key, moved = (Keys.ARROW_LEFT, -0.05) if threshold > 0.5 else (Keys.ARROW_RIGHT, 0.05)
        _check_changes(
            browser,
            lambda: browser.move_slider(1, key),
            f"threshold {threshold + moved:.2f}",
            "moving the threshold slider",
        )
        first = browser.title().split(",")[1].split()[0]  # the model shown now
        other = "dice" if first == "bce" else "bce"
        _check_changes(browser, lambda: browser.choose_model(other), f"{other} model", "switching the model")
    finally:
        if driver is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shot))
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert shot.is_file()
