"""Every notebook executed with the ci preset (papermill), re-executed by nbval (checked cells must give the
same rounded tables), and its recorded metrics checked against golden bands."""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from workbench.app.report import REPO, execute_notebook, notebook_paths

# Golden bands for the ci preset. Figures of the ci mlp_dense and mlp_seeds zoos and generators (the same configs
# as tests/golden.py) use the bands derived from their spread over 10 seeds × 2 threads and 5 seeds × 1 thread
# (tests/bands.md); the others are single-seed bands (seed 0 at 1 and 2 threads) — see tests/bands.md.
GOLDEN = {
    "01_zoo_collection": {
        ("mlp_dense", "test_acc_mean"): (88.5, 92.5),
        ("mlp_dense", "members"): (50, 50),
        ("mlp_seeds", "test_acc_mean"): (86.5, 90.0),
        ("mlp_seeds", "median_l2"): (8.0, 15.0),
        ("resnet_bn", "test_acc_mean"): (25.0, 50.0),
        ("resnet_bn_lowlr", "median_l2"): (0.005, 0.2),
    },
    "02_generator_training": {
        ("mlp_dense", "reconstruction_acc_mean"): (88.5, 92.5),
        ("mlp_dense", "original_acc_mean"): (88.5, 92.5),
    },
    "03_sampling_and_evaluation": {
        ("mlp_dense", "original", "mean"): (88.5, 92.5),
        ("mlp_dense", "generated (ddim-50)", "mean"): (88.5, 92.5),
        ("mlp_dense", "generated (ddim-50)", "within_1pt"): (0.75, 1.0),  # 16 samples here (30 in the sweep)
        ("mlp_dense", "gaussian (per position)", "mean"): (88.5, 92.5),
        ("seeds", "soup (unaligned)", "mean"): (0.0, 25.0),
        ("seeds", "soup (aligned)", "mean"): (77.5, 90.0),
        ("seeds", "original", "mean"): (86.5, 90.0),
    },
    "05_conditional_generation": {
        ("summary", "seen_original_mean"): (78.0, 93.0),
        ("summary", "seen_selected_by_train_mean"): (78.0, 94.0),
        ("summary", "swap_generated_mean"): (20.0, 65.0),
    },
    "06_style_interpolation": {
        ("summary", "style_distance", "original"): (0.45, 0.62),
        ("summary", "style_distance", "generated"): (0.45, 0.70),
        ("summary", "style_distance", "no_lora"): (0.75, 0.92),
        ("summary", "psnr_to_target", "original"): (19.0, 23.5),
        ("summary", "psnr_to_target", "no_lora"): (11.5, 15.0),
        ("summary", "ssim_content", "no_lora"): (0.6, 0.85),
    },
    "07_dataset_conditioned_generation": {  # bands from 6 seeds (tests/bands.md, "D2NWG")
        ("summary", "unseen_generated_mean"): (41.0, 66.0),
        ("summary", "unseen_prototype_mean"): (61.0, 75.0),
        ("summary", "unseen_fewshot_probe_mean"): (57.5, 79.5),
        ("summary", "unseen_random_mean"): (14.5, 24.0),
        ("summary", "unseen_regressor_mean"): (51.5, 73.5),
        ("summary", "unseen_original_mean"): (78.0, 86.0),
        ("summary", "seen_original_mean"): (93.0, 97.0),
        ("summary", "seen_generated_mean"): (72.0, 97.0),
        ("summary", "seen_selected_by_support_mean"): (87.0, 98.5),
    },
    "08_tokenised_generation": {  # bands from 6 seeds (tests/bands.md, "RPG")
        ("summary", "seeds_original_mean"): (52.5, 67.5),
        ("summary", "seeds_pdiff_aligned_mean"): (19.5, 34.5),
        ("summary", "unseen_generated_mean"): (42.5, 57.0),
        ("summary", "unseen_trained_mean"): (80.0, 90.0),
        ("summary", "unseen_nearest_code_mean"): (62.5, 76.5),
        ("summary", "seen_trained_mean"): (79.0, 95.0),
        ("summary", "largest_model_generated_mean"): (39.5, 70.0),
        ("summary", "largest_model_original_mean"): (38.5, 70.0),
    },
    "04_memorization_analysis": {
        ("mlp_dense", "iou", "original", "iou_within"): (0.8, 1.0),
        ("mlp_dense", "iou", "generated", "max_iou_to_original_median"): (0.85, 1.0),
        ("mlp_dense", "novelty_matched_accuracy", "generated"): (88.0, 92.5),
        ("mlp_dense", "l2_nearest_median", "original"): (1e-4, 0.05),
    },
}


@pytest.fixture(scope="module")
def shared_run_dir(tmp_path_factory):
    """One run folder for the notebooks in order, as the report uses it: 02 resumes 01's zoos, 03 and 04 load 02's
    generators, and nbval's re-execution of each notebook loads what its papermill run stored (the cached rerun)."""
    # WORKBENCH_NOTEBOOK_RUN_DIR: a warm ci run folder of your own (e.g. to rerun only the browser tests)
    own = os.environ.get("WORKBENCH_NOTEBOOK_RUN_DIR")
    return Path(own) if own else tmp_path_factory.mktemp("report") / "run"


@pytest.mark.notebook
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("nb", notebook_paths(), ids=lambda p: p.stem)
def test_notebook(nb, tmp_path, shared_run_dir):
    run_dir = shared_run_dir
    out = shared_run_dir.parent / nb.name  # the report folder: test_report_pages builds its pages from these
    # a per-cell limit: a stuck kernel fails the test instead of hanging CI
    execute_notebook(nb, out, {"preset": "ci", "seed": 0, "device": "cpu", "run_dir": str(run_dir)}, timeout=900)
    check = tmp_path / nb.name  # nbval re-executes a copy (its outputs are compared, the report keeps the original)
    check.write_bytes(out.read_bytes())
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider", str(check)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics" / f"{nb.stem}.json").read_text())
    for path, (lo, hi) in GOLDEN.get(nb.stem, {}).items():
        value = metrics
        for k in path:
            value = value[k]
        assert lo <= value <= hi, f"{nb.stem}: {'.'.join(path)} = {value} outside the golden band [{lo}, {hi}]"


@pytest.mark.notebook
def test_report_pages_of_the_ci_notebooks(shared_run_dir):
    """The report's pages from the notebooks executed above: offline, code hidden, the parameters used shown once,
    widgets and bars as final text, small, readable by others; and the index with every notebook's reading."""
    from workbench.app.report_pages import index_page, notebook_digest, notebook_page, summary_markdown

    folder = shared_run_dir.parent
    executed = [folder / nb.name for nb in notebook_paths() if (folder / nb.name).exists()]
    if len(executed) < 2:
        pytest.skip("needs the executed notebooks of test_notebook (run the module, not this test alone)")
    parameters = {"preset": "ci", "seed": 0, "device": "cpu", "run_dir": str(shared_run_dir)}
    digests = []
    for path in executed:
        page = notebook_page(path, parameters)
        text = page.read_text()
        assert page.stat().st_size <= 10_000_000, f"{page.name}: {page.stat().st_size} bytes"
        assert (page.stat().st_mode & 0o777) == 0o644 and (path.stat().st_mode & 0o044) == 0o044
        assert not re.search(r"<script[^>]+src=", text), f"{page.name} loads a script from elsewhere"
        # plotly.js itself names a CDN (map-marker icons: never requested by these figures); the rest must not
        rest = re.sub(r"<script[^>]*>(?:(?!</script>).)*plotly\.js v.*?</script>", "", text, flags=re.S)
        for cdn in ("cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net", "require.min.js", "embed-amd.js",
                    "mathjax"):
            assert cdn not in rest.lower(), f"{page.name} refers to {cdn}"
        assert not re.search(r"<(?:link|img|iframe)[^>]+(?:href|src)=[\"']?https?:", rest), page.name
        assert text.count("plotly.js v") <= 2  # the library once (its banner may name it twice)
        assert "injected-parameters" not in text and "Run with" in text and "from workbench" not in text
        assert "model not found" not in text and "\r" not in text
        digests.append(notebook_digest(path))
    metrics = {p.stem: json.loads(p.read_text()) for p in (shared_run_dir / "metrics").glob("*.json")}
    timings = {d["name"]: 1.0 for d in digests}
    index = index_page(folder, "ci", digests, timings, metrics, parameters).read_text()
    assert not re.search(r"<script[^>]+src=", index) and index.count("plotly.js v") <= 2
    for d in digests:
        assert d["question"] and f"href='{d['name']}.html'" in index
        assert d["reading"], f"{d['name']}: no computed reading found (cell tagged report-reading)"
    assert "Headline" in index and "p-diff" in index
    md = summary_markdown("ci", digests, timings, metrics)
    assert all(d["title"] in md for d in digests)
    assert (folder / "index.html").stat().st_size <= 10_000_000


def test_every_notebook_is_thin_and_parameterised():
    # imported here: nbformat takes ~2 s to import and only the report needs it
    import nbformat

    for nb in notebook_paths():
        cells = [c for c in nbformat.read(str(nb), as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in cells[0].metadata.get("tags", []), nb.name
        names = [line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line]
        assert {"preset", "seed", "device", "run_dir"} <= set(names), nb.name
        assert all("#" in line for line in cells[0].source.splitlines() if line.strip()), "comment every parameter"
        for c in cells:
            assert not any(line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()), nb.name


# ---------------------------------------------------------------------------------------------
# Widgets driven in a real browser: JupyterLab on 127.0.0.1, the system Chromium, Playwright
# ---------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
STARTED = ("() => Array.from(document.querySelectorAll('.jp-InputPrompt')).some(e => /\\[(\\*|\\d+)\\]/"
           ".test(e.textContent))")
# the code cells' prompts: how many are running or queued ("[*]"), how many have not run ("[ ]"), and the last
# error output (a traceback), with any dialog's text
CELL_STATE = """() => {
  const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(e => e.textContent.trim());
  const errors = Array.from(document.querySelectorAll(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"))
    .map(e => e.innerText).filter(t => t.includes('Traceback') || /^\\w*Error\\b/m.test(t));
  const dialog = document.querySelector('.jp-Dialog');
  return {running: prompts.filter(p => p.includes('*')).length, unrun: prompts.filter(p => /\\[\\s*\\]/.test(p)).length,
          prompts: prompts.join(' '), error: errors.length ? errors[errors.length - 1].slice(0, 2000) : '',
          dialog: dialog ? dialog.innerText.slice(0, 300) : ''};
}"""
IDLE = ("() => document.querySelectorAll('.jp-InputPrompt').length > 0 && !Array.from("
        "document.querySelectorAll('.jp-InputPrompt')).some(e => e.textContent.includes('*'))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(shared_run_dir, tmp_path_factory):
    """JupyterLab on loopback over a folder of ci-preset notebooks (parameters injected, not executed) that use the
    run folder the notebooks above filled; yields a _Lab (its run_all opens one notebook and runs it)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (shared_run_dir / "metrics" / "04_memorization_analysis.json").exists():
        pytest.skip("needs the run folder of test_notebook (run the module, not this test alone)")
    import papermill as pm

    root = tmp_path_factory.mktemp("lab")
    params = {"preset": "ci", "seed": 0, "device": "cpu", "run_dir": str(shared_run_dir)}
    for nb in notebook_paths():
        pm.execute_notebook(str(nb), str(root / nb.name), parameters=params, prepare_only=True, progress_bar=False)
    # JupyterLab's default windowing ("contentVisibility") skips the layout of cells off screen: their text reads
    # as "" and their widgets never count as visible. Every cell attached and laid out, as a reader scrolling sees it.
    settings = tmp_path_factory.mktemp("lab-settings")
    # ... and no news toast over the widgets (nor a request for it)
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path_factory.mktemp("lab-workspaces"))}
    port, token = _free_port(), "workbench-test"
    log = root.parent / "lab-server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=(log_file := log.open("w")), stderr=subprocess.STDOUT, env=env)
    import urllib.request

    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start on 127.0.0.1 within a minute")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield _Lab(f"http://127.0.0.1:{port}", token, browser, log)
        finally:
            browser.close()
            server.terminate()
            server.wait(timeout=30)
            log_file.close()


class _Lab:
    """The JupyterLab server and the browser of the browser tests."""

    def __init__(self, base: str, token: str, browser, log: Path) -> None:
        self.base, self.token, self.browser, self.log = base, token, browser, log
        self.page = None

    def _api(self, path: str, method: str = "GET"):
        import urllib.request
        req = urllib.request.Request(f"{self.base}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def run_all(self, name: str, timeout: float = 900.0):
        """Open notebook ``name`` alone (its own workspace; the kernels and page of the test before shut down, so
        no two notebooks' kernels hold memory at once), run all its cells (accepting the kernel a fresh JupyterLab
        asks for), and return the page once every code cell has run.

        A run that stops part-way without an error in the notebook (CI once saw only the first cell run, then
        every prompt empty: a kernel restart or a late dialog) is started again, at most three times, and each
        such incident is reported as a warning with the dialog and the server's log; an error in a cell fails at
        once with its traceback."""
        if self.page is not None:
            self.page.close()
        for k in self._api("kernels"):
            self._api(f"kernels/{k['id']}", "DELETE")
        page = self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{self.base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={self.token}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        incidents, end = [], time.monotonic() + timeout
        for _ in range(4):
            logged = self._log_size()
            if not self._start(page):
                continue
            state = self._wait(page, end)
            if state["unrun"] == 0:
                for incident in incidents:
                    warnings.warn(f"browser test of {name}: {incident}")
                return page
            # a kernel that restarted part-way also makes later cells fail (their variables are gone): that is the
            # restart, not the notebook
            restarted = "restarted" in self._log_since(logged)
            if state["error"] and not restarted:
                raise AssertionError(f"{name}: a cell failed in JupyterLab:\n{state['error']}")
            incidents.append(f"the run stopped with {state['unrun']} code cells not run (prompts: "
                             f"{state['prompts']}; kernel restarted: {restarted}; dialog: "
                             f"{state['dialog'] or 'none'}); ran all again. Server log: {self.log_tail()}")
        raise AssertionError(f"the cells of {name} did not all run:\n" + "\n".join(incidents))

    def _start(self, page) -> bool:
        """Accept a dialog if one is open (a fresh JupyterLab's "Select Kernel", a kernel restart's notice), then
        Run > Run All Cells; whether a cell started within 30 s."""
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        if accept.count():
            accept.first.click()
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        try:
            page.click("#jp-MainMenu >> text=Run", timeout=10_000)
            page.get_by_text("Run All Cells", exact=True).click(timeout=10_000)
            page.wait_for_function(STARTED, timeout=30_000)
            return True
        except Exception:  # a dialog took the click (accepted next time), or the cells did not start
            if not page.locator(".jp-Dialog").count():
                page.keyboard.press("Escape")  # close the menu if it is still open
            return False

    @staticmethod
    def _wait(page, end: float) -> dict:
        """Poll the code cells' prompts until none is running or queued for 5 s in a row (JupyterLab marks queued
        cells ``[*]`` too, so a running notebook never shows none); their state then. (The kernel's
        ``execution_state`` over REST is no sign of a hang: a fresh clone's suite saw it "idle" for 10 s while an
        import cell ran.)"""
        quiet = 0
        while time.monotonic() < end:
            state = page.evaluate(CELL_STATE)
            quiet = quiet + 1 if state["running"] == 0 else 0
            if quiet >= 5 or (state["running"] == 0 and state["unrun"] == 0):
                return state
            time.sleep(1.0)
        raise AssertionError(f"the notebook still ran after the test's time ran out (prompts: {state['prompts']})")

    def _log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def _log_since(self, offset: int) -> str:
        """The server's log written after byte ``offset``."""
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the JupyterLab server's log (kernel restarts and deaths show there)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.splitlines()[-lines:]) or "(empty)"


@contextlib.contextmanager
def _shot_on_failure(page, name: str):
    """A failing browser test leaves a screenshot of the whole window (``<name>_failure.png``) and the cells'
    prompts in its message: what the page showed when the wait ran out."""
    try:
        yield
    except Exception as e:
        page.screenshot(path=str(_shots() / f"{name}_failure.png"))
        prompts = page.evaluate("Array.from(document.querySelectorAll('.jp-InputPrompt')).map(e => e.textContent)"
                                ".join(' ')")
        errors = [x[:300] for x in page.locator(".jp-OutputArea-output[data-mime-type="
                  "'application/vnd.jupyter.stderr']").all_inner_texts()][:5]
        raise AssertionError(f"{name}: {e}\nprompts: {prompts}\nstderr outputs: {errors}") from e


def _app_of(page, control):
    """The widget app (its VBox) holding ``control``, once the control is shown and every cell has run, scrolled
    into view."""
    control.wait_for(state="visible", timeout=600_000)
    page.wait_for_function(IDLE, timeout=600_000)
    app = control.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
    app.scroll_into_view_if_needed()
    return app


def _settle(app, check, timeout: float = 30.0) -> str:
    """The app's text once ``check(text)`` holds (the page may still be rendering the last update), else its text
    after ``timeout`` seconds (the test's asserts then say what is wrong)."""
    end = time.monotonic() + timeout
    while True:
        text = app.inner_text()
        try:
            if check(text):
                return text
        except AssertionError:  # no such row yet
            pass
        if time.monotonic() > end:
            return text
        time.sleep(0.5)


def _row(text: str, label: str, which: int = -1) -> list[float]:
    """The numbers of a row headed ``label`` in a widget's text (a rendered pandas table: cells tab-separated), the
    last such row unless ``which`` says otherwise (a slider's readout above it may read the same)."""
    rows = [[float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", x.split("\t", 1)[1])]
            for x in text.splitlines() if "\t" in x and x.split("\t", 1)[0].strip() == label]
    rows = [r for r in rows if r]
    assert rows, f"no table row {label!r} in: {text[:1500]}"
    return rows[which]


def _close(found: list[float], expected: float, tol: float) -> bool:
    return any(abs(v - expected) <= tol for v in found)


def _shots() -> Path:
    folder = REPO / "reports" / "ci" / "widgets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def pdiff_run(shared_run_dir):
    """The ci mlp_dense zoo and generator, loaded from the run folder (what the notebooks' widgets use)."""
    from workbench.app.presets import load_preset
    from workbench.systems.pdiff.experiment import pdiff_experiment

    cfg = load_preset("ci")
    return pdiff_experiment("mlp_dense", cfg.zoo("mlp_dense"), cfg.pdiff_config(), shared_run_dir, samplers=(),
                            evaluate=False)


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_sampling_widget_in_a_real_browser(lab, pdiff_run):
    """Notebook 03 in JupyterLab: the sampling app shows its starting result, marks the figure stale when the seed
    changes, and the button redraws the table with the values the same callback computes headlessly."""
    from workbench.app.widgets import SamplingApp

    page = lab.run_all("03_sampling_and_evaluation.ipynb")
    with _shot_on_failure(page, "sampling"):
        button = page.locator("button.jupyter-button", has_text="Sample and evaluate").first
        app = _app_of(page, button)
        before = app.inner_text()
        assert "seed 0: done" in before and "generated (ddim-50)" in before, before[:500]
        app.screenshot(path=str(_shots() / "sampling_before.png"))
        seed = app.locator(".widget-inline-hbox", has=page.locator("label", has_text="seed")).locator("input")
        seed.fill("3")
        seed.press("Enter")
        page.wait_for_function("(el) => el.innerText.includes('stale')", arg=app.element_handle(), timeout=30_000)
        button.click()
        page.wait_for_function("(el) => el.innerText.includes('seed 3: done')", arg=app.element_handle(),
                               timeout=120_000)
        headless = SamplingApp(pdiff_run.generator, pdiff_run.zoo, n=16)
        headless.seed.value = 3
        table = headless.compute()
        # the kernel and this process may use other thread counts: a prediction may flip (1/16 of a 0.1-pt step)
        expected = table.loc["generated (ddim-50)", "mean"]
        after = _settle(app, lambda t: _close(_row(t, "generated (ddim-50)"), expected, 0.05))
        app.screenshot(path=str(_shots() / "sampling_after.png"))
        assert _close(_row(after, "generated (ddim-50)"), expected, 0.05), (after, table)


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_interpolation_widget_in_a_real_browser(lab, pdiff_run):
    """Notebook 04 in JupyterLab: typing λ = 0.25 into the slider's readout moves the marked point on the curve and
    shows the accuracy the interpolated model has headlessly."""
    from workbench.app.widgets import InterpolationApp

    page = lab.run_all("04_memorization_analysis.ipynb")
    with _shot_on_failure(page, "interpolation"):
        slider = page.locator(".widget-slider", has=page.locator("label", has_text="λ")).first
        app = _app_of(page, slider)
        assert "λ = 0.50 (weights): test accuracy" in app.inner_text()
        app.screenshot(path=str(_shots() / "interpolation_before.png"))
        readout = app.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.25")
        page.keyboard.press("Enter")
        page.wait_for_function("(el) => el.innerText.includes('λ = 0.25')", arg=app.element_handle(), timeout=60_000)
        zoo = pdiff_run.zoo
        headless = InterpolationApp(zoo, zoo.vectors()[0], zoo.vectors()[-1], generator=pdiff_run.generator)
        headless.lam.value = 0.25  # its observer computes
        after = _settle(app, lambda t: "First test examples" in t and "λ = 0.25" in t)
        app.screenshot(path=str(_shots() / "interpolation_after.png"))
        assert f"λ = 0.25 (weights): test accuracy {headless.accuracy:.2f} %" in after, after[:400]
        assert "First test examples" in after and "Test accuracy along the interpolation" in after


@pytest.fixture(scope="module")
def cond_run(shared_run_dir):
    """Notebook 05's LoRA zoo and conditional generator, loaded from the run folder."""
    from workbench.app.presets import load_preset
    from workbench.core.config import offset_seed
    from workbench.core.paths import seeded_path
    from workbench.systems.cond_pdiff.experiment import collect_task_zoo, seeded_config
    from workbench.systems.cond_pdiff.generator import fit_or_load_cond

    inputs = load_preset("ci").cond_inputs()
    zc = inputs["zoo_config"]
    zoo = collect_task_zoo(offset_seed(zc, 0), seeded_path(shared_run_dir / "lora_zoos" / zc.name, 0))
    gen = fit_or_load_cond(zoo, seeded_config(inputs["config"], 0),
                           seeded_path(shared_run_dir / "generators" / "cond_pdiff" / zc.name, 0),
                           cache_dir=shared_run_dir / "cache")
    return zoo, gen


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_task_prompt_widget_in_a_real_browser(lab, cond_run, shared_run_dir):
    """Notebook 05 in JupyterLab: choosing another task fills in its text, marks the result stale, and the button
    shows that task's originals (as recorded by the notebook) and the generated accuracy computed headlessly."""
    from workbench.app.widgets import TaskPromptApp

    zoo, gen = cond_run
    other = zoo.conditions[1].name
    page = lab.run_all("05_conditional_generation.ipynb")
    with _shot_on_failure(page, "task_prompt"):
        button = page.locator("button.jupyter-button", has_text="Generate and evaluate").first
        app = _app_of(page, button)
        before = app.inner_text()
        assert f"on {zoo.conditions[0].name}, seed 0: done" in before and "generated" in before, before[:500]
        app.screenshot(path=str(_shots() / "task_prompt_before.png"))
        app.locator("select").first.select_option(label=other)
        page.wait_for_function("(el) => el.innerText.includes('stale')", arg=app.element_handle(), timeout=30_000)
        assert app.locator("input[type=text]").first.input_value() == zoo.conditions[1].description
        button.click()
        page.wait_for_function(f"(el) => el.innerText.includes('on {other}, seed 0: done')", arg=app.element_handle(),
                               timeout=300_000)
        recorded = json.loads((shared_run_dir / "metrics" / "05_conditional_generation.json").read_text())
        headless = TaskPromptApp(gen, zoo, task=other, n=8)
        table = headless.compute()
        after = _settle(app, lambda t: _close(_row(t, "generated"), table.loc["generated", "mean"], 0.2))
        app.screenshot(path=str(_shots() / "task_prompt_after.png"))
        assert _close(_row(after, f"original ({other})"), recorded["seen"][other]["original_mean"], 0.01), after
        assert _close(_row(after, "generated"), table.loc["generated", "mean"], 0.2), (after, table)


@pytest.fixture(scope="module")
def style_run(shared_run_dir):
    """Notebook 06's style zoo and style-conditioned generator, loaded from the run folder, and the first generated
    LoRA of each style as its evaluation samples it."""
    from workbench.app.presets import load_preset
    from workbench.core.config import offset_seed
    from workbench.core.paths import seeded_path
    from workbench.systems.cond_pdiff.experiment import seeded_config
    from workbench.systems.cond_pdiff.generator import fit_or_load_cond
    from workbench.systems.cond_pdiff.style.zoo import collect_style_zoo

    inputs = load_preset("ci").style_inputs()
    root = shared_run_dir / "style"
    zoo = collect_style_zoo(offset_seed(inputs["zoo_config"], 0), seeded_path(root / "zoo", 0))
    gen = fit_or_load_cond(zoo, seeded_config(inputs["config"], 0), seeded_path(root / "generator", 0))
    n = int(inputs["settings"].get("n_samples", 8))
    vectors = {s: gen.sample(s, n, seed=i, steps=50)[0] for i, s in enumerate(zoo.styles)}
    return zoo, gen, vectors


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_style_widget_in_a_real_browser(lab, style_run):
    """Notebook 06 in JupyterLab: typing λ = 0.25 into the style slider restylises the patch and the table shows the
    style distances the same interpolation has headlessly."""
    from workbench.app.widgets import StyleInterpolationApp

    zoo, gen, vectors = style_run
    page = lab.run_all("06_style_interpolation.ipynb")
    with _shot_on_failure(page, "style"):
        slider = page.locator(".widget-slider", has=page.locator("label", has_text="λ")).first
        app = _app_of(page, slider)
        before = app.inner_text()
        assert "at λ = 0.50 (weights)" in before, before[:500]
        app.screenshot(path=str(_shots() / "style_before.png"))
        first, second = (app.locator("select").nth(i).evaluate("s => s.options[s.selectedIndex].textContent")
                         for i in range(2))
        readout = slider.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.25")
        page.keyboard.press("Enter")
        page.wait_for_function("(el) => el.innerText.includes('at λ = 0.25')", arg=app.element_handle(),
                               timeout=120_000)
        headless = StyleInterpolationApp(gen, zoo, vectors=vectors, first=first, second=second)
        headless.lam.value = 0.25  # its observer computes
        expected = headless.table.loc[0.25]
        after = _settle(app, lambda t: bool(_row(t, "0.25")))
        app.screenshot(path=str(_shots() / "style_after.png"))
        found = _row(after, "0.25")
        assert all(_close(found, float(v), 0.002) for v in expected), (after, headless.table)


def _click_and_wait(page, app, button, label: str, timeout: int = 300_000) -> None:
    """Click a _ButtonApp's button and wait until it has been busy (disabled) and is back to ``label``."""
    handle = button.element_handle()
    button.click()
    page.wait_for_function("(b) => b.disabled", arg=handle, timeout=30_000)
    page.wait_for_function("([b, l]) => !b.disabled && b.innerText.includes(l)", arg=[handle, label],
                           timeout=timeout)


@pytest.fixture(scope="module")
def d2nwg_run(shared_run_dir):
    """Notebook 07's D2NWG results (zoo, generator, evaluations), loaded from the run folder."""
    from workbench.app.presets import load_preset
    from workbench.systems.d2nwg.experiment import d2nwg_experiment

    inputs = load_preset("ci").d2nwg_inputs()
    return d2nwg_experiment(**inputs, run_dir=shared_run_dir / "d2nwg", seed=0, progress=False), inputs


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_dataset_widget_in_a_real_browser(lab, d2nwg_run):
    """Notebook 07 in JupyterLab: the dataset composer starts on the first held-out dataset; typing its classes in
    reverse order, then pressing the button, shows the accuracies the same composition has
    headlessly."""
    from workbench.app.widgets import DatasetComposerApp, compose_and_generate

    results, inputs = d2nwg_run
    page = lab.run_all("07_dataset_conditioned_generation.ipynb")
    with _shot_on_failure(page, "dataset"):
        label = "Generate heads for this dataset"
        button = page.locator("button.jupyter-button", has_text=label).first
        app = _app_of(page, button)
        before = app.inner_text()
        assert "done in" in before and "prototype" in before, before[:500]
        app.screenshot(path=str(_shots() / "dataset_before.png"))
        start = DatasetComposerApp(results, shots=inputs.get("shots", 5), n=inputs.get("n_samples", 10), seed=0)
        classes = ",".join(reversed(start.classes.value.split(",")))
        box = app.locator("input[type=text]").first
        box.fill(classes)
        box.press("Enter")
        _click_and_wait(page, app, button, label)
        expected = compose_and_generate(results, start.source.value, classes, start.domain.value, start.shots.value,
                                        n=start.n.value, seed=0)["accuracy"]
        after = _settle(app, lambda t: _close(_row(t, "generated", 0), expected.loc["generated", "mean"], 0.15))
        app.screenshot(path=str(_shots() / "dataset_after.png"))
        for method in ("generated", "prototype", "few-shot probe"):
            assert _close(_row(after, method, 0), expected.loc[method, "mean"], 0.15), (method, after[:1500], expected)
        assert _row(after, "generated", 0) != _row(before, "generated", 0)


@pytest.fixture(scope="module")
def rpg_tasks_run(shared_run_dir):
    """Notebook 08's task-code zoo and RPG generator (and its evaluation), loaded from the run folder."""
    from workbench.app.presets import load_preset
    from workbench.systems.rpg.experiment import rpg_task_code_experiment

    inputs = load_preset("ci").rpg_inputs()
    return rpg_task_code_experiment(inputs["task_zoo"], inputs["task_config"], shared_run_dir / "rpg",
                                    n_per_code=inputs["n_per_code"], n_seen_eval=inputs["n_seen_eval"], seed=0)


@pytest.mark.notebook
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_task_code_widget_in_a_real_browser(lab, rpg_tasks_run):
    """Notebook 08 in JupyterLab: toggling digit 0's bit marks the figure stale; the button generates models for the
    new code and shows the overall accuracies the same code has headlessly."""
    from workbench.app.widgets import TaskCodeApp
    from workbench.systems.rpg.experiment import task_code_probe

    page = lab.run_all("08_tokenised_generation.ipynb")
    with _shot_on_failure(page, "task_code"):
        label = "Generate models for this code"
        button = page.locator("button.jupyter-button", has_text=label).first
        app = _app_of(page, button)
        before = app.inner_text()
        assert "done in" in before and "generated (mean of n)" in before, before[:500]
        app.screenshot(path=str(_shots() / "task_code_before.png"))
        start = TaskCodeApp(rpg_tasks_run, n=8, seed=0).code
        app.locator("button.jupyter-button", has_text=re.compile(r"^0$")).first.click()
        page.wait_for_function("(el) => el.innerText.includes('another code')", arg=app.element_handle(),
                               timeout=30_000)
        _click_and_wait(page, app, button, label)
        code = ("0" if start[0] == "1" else "1") + start[1:]
        expected = task_code_probe(rpg_tasks_run, code, n=8, seed=0)["accuracy"]
        after = _settle(app, lambda t: _close(_row(t, expected.index[0]), expected.iloc[0], 0.15))
        app.screenshot(path=str(_shots() / "task_code_after.png"))
        for family, value in expected.items():
            assert _close(_row(after, family), value, 0.15), (family, after[:1500], expected)
