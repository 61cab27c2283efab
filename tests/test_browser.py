"""Notebook 03 used as a person would: JupyterLab in headless Chromium, Run All, the ipywidgets sample browser.

Prepares a ci run through step 03 with the runner (real llama-server), opens a copy of 03_inspect.ipynb pointed at
that run in JupyterLab, runs every cell from the Run menu, checks the widget browser (and filters it once) and that
no cell shows an error, saves a screenshot to tests/artifacts/browser_03_inspect.png, and checks that every plot in
the run's HTML report (reports/03_inspect.html) loads. Uses Debian's chromium (/usr/bin/chromium) through
Playwright's Python client; no browser is downloaded.
"""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, llama_server_available, tunebook_cli

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS / "browser_03_inspect.png"
RUN = "browser"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                       "(`make test` installs it with apt-get)"),
    pytest.mark.skipif(not llama_server_available(), reason="llama-server not installed (make install)"),
]

# JupyterLab user settings for the test: every cell in the DOM (no virtual scrolling), no news toast
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_for_run(run_dir: Path, nb_dir: Path, student: str) -> Path:
    """A copy of 03_inspect.ipynb whose parameters cell points at ``run_dir``; the run's student (and every setting
    the cell does not show) comes from the run's params.yaml."""
    nb = nbformat.read(str(ROOT / "notebooks" / "03_inspect.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    src, n = re.subn(r"^run_dir = .*$", f"run_dir = {json.dumps(str(run_dir))}", cell.source, flags=re.M)
    assert n == 1 and "student" not in src and student, cell.source
    cell.source = src
    nb_dir.mkdir(parents=True, exist_ok=True)
    path = nb_dir / "03_inspect.ipynb"
    nbformat.write(nb, str(path))
    return path


def wait_for_lab(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"JupyterLab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_lab(proc: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its process group is gone."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=10).close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue


def start_lab(tmp_path: Path, nb_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, str, Path]:
    """JupyterLab rooted at ``nb_dir`` on a free port with a random token and private settings/workspace/runtime
    dirs; returns once it answers. (proc, base URL, token, log path)"""
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    jupyter_home = tmp_path / "jupyter"
    for name, content in LAB_SETTINGS.items():
        f = jupyter_home / "settings" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(content))
    lab_env = {**os.environ, **env, "JUPYTER_RUNTIME_DIR": str(jupyter_home / "runtime"),
               "JUPYTERLAB_WORKSPACES_DIR": str(jupyter_home / "workspaces"),
               "JUPYTERLAB_SETTINGS_DIR": str(jupyter_home / "settings")}
    log = tmp_path / "jupyterlab.log"
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip", "127.0.0.1",
           "--port", str(port), "--port-retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={nb_dir}", f"--LabApp.user_settings_dir={jupyter_home / 'settings'}",
           f"--LabApp.workspaces_dir={jupyter_home / 'workspaces'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "w") as logf:
        lab = subprocess.Popen(cmd, cwd=nb_dir, env=lab_env, stdout=logf, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for_lab(f"{base}/api/status?token={token}", lab, log)
    except BaseException:
        stop_lab(lab, base, token)
        raise
    return lab, base, token, log


# the notebook in the visible tab (a restored workspace can hold other notebooks' cells in the page too)
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
PROMPTS_JS = f"""() => Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-CodeCell .jp-InputPrompt'))
                      .map(p => p.textContent.trim())"""


class CellsNotStarted(AssertionError):
    pass


def _api(base: str, token: str, path: str, body: dict | None = None):
    req = urllib.request.Request(f"{base}{path}", data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def start_session(base: str, token: str, path: str) -> str:
    """The notebook's session and kernel, started through the REST API; returns the kernel's id."""
    session = _api(base, token, "/api/sessions",
                   {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}})
    return session["kernel"]["id"]


def wait_kernel_connected(base: str, token: str, kernel: str, timeout: float = 180) -> None:
    """The server sees the page connected to ``kernel`` and the kernel idle (it says "starting" until a client
    connects): a Run All clicked before that was lost once on a clean machine's first, cold kernel."""
    deadline = time.monotonic() + timeout
    while True:
        k = _api(base, token, f"/api/kernels/{kernel}")
        if k.get("connections", 0) >= 1 and k.get("execution_state") == "idle":
            return
        assert time.monotonic() < deadline, f"kernel {kernel} not connected and idle after {timeout:.0f} s: {k}"
        time.sleep(0.5)


STATE_JS = f"""() => {{
    const prompts = Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-CodeCell .jp-InputPrompt'))
                         .map(p => p.textContent.trim());
    const running = Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-CodeCell'))
                         .filter(c => /\\[\\*\\]/.test(c.querySelector('.jp-InputPrompt')?.textContent || ''));
    const first = running[0];
    const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
    const dialog = document.querySelector('.jp-Dialog');
    return {{prompts, indicator: status ? status.dataset.status : null,
             dialog: dialog ? dialog.innerText.slice(0, 500) : null,
             running_source: first ? (first.querySelector('.jp-InputArea-editor')?.innerText || '').slice(0, 300) : null,
             running_output: first ? (first.querySelector('.jp-OutputArea')?.innerText || '').slice(-1500) : null}};
  }}"""


def page_state(page, base: str, token: str) -> str:
    """What the page and the server say (prompts, execution indicator, an open dialog, the running cell and its
    output so far, the kernels' states, the busiest processes): the message of a Run All that did not finish."""
    try:
        state = page.evaluate(STATE_JS)
    except Exception as e:  # the page itself is gone
        state = {"page": repr(e)}
    try:
        state["kernels"] = [(k["id"][:8], k["execution_state"]) for k in _api(base, token, "/api/kernels")]
    except Exception as e:
        state["kernels"] = repr(e)
    # a stalled cell may be one starved by a process another test left behind
    ps = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True)
    state["busiest_processes"] = [line[:200] for line in ps.stdout.splitlines()[:6]]
    return json.dumps(state, ensure_ascii=False, indent=1)


def run_all_cells(page, timeout_ms: int, poll=None, base: str = "", token: str = "") -> list[str]:
    """Run ▸ Run All Cells from the menu bar, then wait for the kernel to be idle and every cell to have a count.
    ``poll(page)``, if given, is called every second while the cells run (to watch live output). A Run All that
    does not finish fails with the page's state (which cell runs, its output so far, the kernel's state)."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-content .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    try:  # the first cell starts ([*] or a count) within a minute, or the page is talking to no kernel
        page.wait_for_function(
            rf"""() => {{ const p = document.querySelector('{PANEL} .jp-Notebook .jp-CodeCell .jp-InputPrompt');
                       return p && /\[(\*|\d+)\]/.test(p.textContent); }}""", timeout=60_000, polling=500)
    except Exception as e:
        raise CellsNotStarted(f"Run All did not start the first cell: {e}\n{page_state(page, base, token)}") from e
    progress_js = f"""() => {{
             const prompts = Array.from(document.querySelectorAll('{PANEL} .jp-Notebook .jp-CodeCell .jp-InputPrompt'));
             const status = document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
             if (status === 'dead') return 'dead';
             return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))
                    && status === 'idle' ? 'done' : 'running';
           }}"""
    deadline = time.monotonic() + timeout_ms / 1000
    while (progress := page.evaluate(progress_js)) != "done":
        if progress == "dead":
            raise AssertionError(f"the kernel died during Run All:\n{page_state(page, base, token)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"cells still running after {timeout_ms / 1000:.0f} s:\n{page_state(page, base, token)}")
        if poll is not None:
            poll(page)
        page.wait_for_timeout(1000)
    return page.evaluate(PROMPTS_JS)


def open_and_run_all(page, base: str, token: str, name: str, timeout_ms: int, poll=None) -> list[str]:
    """Open notebook ``name`` in JupyterLab and Run All, as a person would; returns the cells' prompts."""
    # the notebook's session and kernel exist before the page opens: JupyterLab attaches to it
    # instead of racing two kernel starts (seen once: the page kept a kernel that was shut down, and Run All did nothing)
    kernel = start_session(base, token, name)
    for attempt in range(2):
        page.goto(f"{base}/lab/tree/{name}?token={token}&reset")  # reset: a workspace with only this notebook
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", state="visible")
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=180_000)
        wait_kernel_connected(base, token, kernel)
        try:
            return run_all_cells(page, timeout_ms=timeout_ms, poll=poll, base=base, token=token)
        except CellsNotStarted as e:
            if attempt:
                raise
            print(f"{name}: reloading the page once: {e}")
    raise AssertionError("unreachable")


def assert_no_error_output(page) -> None:
    """No cell shows an error output or a traceback on stderr."""
    errors = page.locator(f'{PANEL} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, errors.first.inner_text()[:2000]
    stderr = page.locator(f'{PANEL} .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
    tracebacks = [t for t in stderr.all_inner_texts() if "Traceback" in t]
    assert not tracebacks, tracebacks[0][:2000]


def full_notebook_screenshot(page, path: Path) -> None:
    """Full-page screenshot: the viewport grows to the notebook's height so every cell is in the picture."""
    page.keyboard.press("Control+b")  # hide the file browser: the notebook gets the width
    height = page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll(
                                 '.jp-NotebookPanel .jp-WindowedPanel-outer, .jp-NotebookPanel .jp-Notebook'))
                               .map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": 1400, "height": min(max(1000, height + 200), 16000)})
    page.evaluate("() => document.querySelectorAll('.jp-NotebookPanel .jp-WindowedPanel-outer')"
                  ".forEach(e => e.scrollTo(0, 0))")
    page.wait_for_timeout(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.keyboard.press("Control+b")
    page.set_viewport_size({"width": 1400, "height": 1000})


def close_browser(pw, browser, failed_page, failure_png: str) -> None:
    """Close the browser; ``failed_page`` (the page of a test that failed midway) is saved as a screenshot first."""
    if failed_page is not None:
        try:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            failed_page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)
        except Exception:
            pass
    if browser is not None:
        browser.close()
    if pw is not None:
        pw.stop()


def test_notebook_03_in_jupyterlab_and_its_html_report(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tunebook import settings

    started = time.monotonic()
    # a. a run through 03 (starts and stops its own llama-server)
    out = tmp_path / "outputs"
    env = {"TUNEBOOK_OUTPUTS": str(out)}
    r = tunebook_cli("run", "--profile", "ci", "--run-id", RUN, "--to", "03", "-p", "serve.port=18800", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = out / RUN
    assert (run_dir / "data" / "qa.jsonl").is_file() and (run_dir / "reports" / "03_inspect.html").is_file()
    prepared = time.monotonic()

    # b. the notebook, pointed at that run
    nb_dir = tmp_path / "notebooks"
    notebook_for_run(run_dir, nb_dir, settings.load("ci").student)

    # c. JupyterLab, private settings/workspace/runtime dirs, a random token
    lab, base, token, log = start_lab(tmp_path, nb_dir, env)
    pw = browser = page = None
    shot_taken = False
    try:
        # d. the notebook in headless Chromium: Run All, then the widget browser and no error output
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        prompts = open_and_run_all(page, base, token, "03_inspect.ipynb", timeout_ms=600_000)
        code_cells = sum(c.cell_type == "code" for c in nbformat.read(str(nb_dir / "03_inspect.ipynb"), 4).cells)
        assert len(prompts) == code_cells and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts

        assert_no_error_output(page)

        widget = page.locator(".jupyter-widgets.widget-vbox").filter(has=page.locator(".widget-dropdown"))
        widget.first.wait_for(state="visible", timeout=60_000)
        assert widget.count() == 1
        dropdowns = widget.locator(".widget-dropdown")
        assert dropdowns.count() == 2
        assert dropdowns.nth(0).locator("label").inner_text() == "source"
        assert dropdowns.nth(1).locator("label").inner_text() == "flag"
        assert widget.locator(".widget-slider").count() == 1
        flags = dropdowns.nth(1).locator("select option").all_inner_texts()
        assert flags[:4] == ["(all)", "train", "recall", "unseen"], flags
        rows_text = widget.locator(".widget-html-content p").first
        total = int(rows_text.inner_text().split()[0])
        assert total > 0 and widget.locator("table").count() == 1
        assert not page.get_by_text("Error displaying widget").count()

        # interactive: the flag dropdown filters the table through the kernel
        dropdowns.nth(1).locator("select").select_option("train")
        expect(rows_text).not_to_have_text(f"{total} rows", timeout=30_000)
        train_rows = int(rows_text.inner_text().split()[0])
        assert 0 < train_rows < total

        # e. full-page screenshot: the viewport grows to the notebook's height so every cell is in the picture
        full_notebook_screenshot(page, SCREENSHOT)
        shot_taken = True
        ran = time.monotonic()

        # f. the run's HTML report: every plot loads
        report = run_dir / "reports" / "03_inspect.html"
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(report.as_uri(), wait_until="load")
        images = page.evaluate("""() => Array.from(document.images)
                                    .map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))""")
        assert images, "no <img> in reports/03_inspect.html"
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
        print(f"browser test: run through 03 {prepared - started:.0f} s, JupyterLab + Run All {ran - prepared:.0f} s, "
              f"{len(images)} plots in the report, screenshot {SCREENSHOT}")
    finally:
        close_browser(pw, browser, page if not shot_taken else None, "browser_03_inspect_failure.png")
        stop_lab(lab, base, token)
        # 03's judge (ci profile) restarts the run's teacher from the notebook when the runner has stopped it:
        # stop it as a person would, or it outlives the test (seen: SmolLM2 on this port, parent gone)
        tunebook_cli("stop", "--run-id", RUN, env=env)
