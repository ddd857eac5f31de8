"""A real JupyterLab server on loopback and headless Chromium, for the browser tests and benchmarks."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMAVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts"
LAB_SETTINGS = {
    # Render every cell (JupyterLab 4 otherwise hides cells scrolled out of view) and fetch no news.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}


def browser_available() -> str | None:
    """None if the browser tests can run here, else the reason they cannot."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (set CHROMAVIZ_CHROMIUM)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(source: Path, target: Path, **parameters) -> Path:
    """Copy a notebook with new default values in its ``parameters`` cell."""
    nb = json.loads(source.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).splitlines()
    for name, value in parameters.items():
        lines = [f"{name} = {value!r}" if line.split("=")[0].strip() == name else line for line in lines]
    cell["source"] = "\n".join(lines)
    target.write_text(json.dumps(nb))
    return target


@contextmanager
def jupyter_lab(root_dir: Path):
    """Start JupyterLab on 127.0.0.1 serving ``root_dir``; yields (base URL, token); stops it after."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = root_dir / ".lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    log = open(root_dir / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", "--allow-root",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={root_dir / '.lab-workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root_dir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {root_dir / 'jupyter.log'}")
                time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def chromium_page(width: int = 1400, height: int = 1100):
    """A fresh headless Chromium page (Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def open_notebook(page, url: str, token: str, name: str, timeout: float = 90_000) -> None:
    """Open ``name`` in a fresh JupyterLab workspace and wait for an idle kernel."""
    page.goto(f"{url}/lab/workspaces/t{uuid.uuid4().hex[:8]}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel", timeout=timeout)
    deadline = time.time() + timeout / 1000
    while time.time() < deadline:
        dismiss_dialogs(page)
        if page.query_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]'):
            page.wait_for_timeout(500)  # a kernel-selection dialog can still follow
            dismiss_dialogs(page)
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the notebook's kernel did not become idle")


def collapse_left_sidebar(page) -> None:
    """Close JupyterLab's file browser, as one would to give a notebook the screen."""
    tab = page.query_selector(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if tab:
        tab.click()
        page.wait_for_timeout(300)


def dismiss_dialogs(page) -> None:
    """Accept any JupyterLab dialog (kernel selection and the like), printing what it said."""
    for dialog in page.query_selector_all(".jp-Dialog"):
        print("JupyterLab dialog:", " ".join(dialog.inner_text().split())[:300])
        accept = dialog.query_selector(".jp-mod-accept")
        if accept:
            accept.click()
        else:
            page.keyboard.press("Escape")


def run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, through JupyterLab's own menu, until the first code cell has started.

    A click made while the kernel is still connecting can be lost, so it is repeated if no cell
    shows an execution mark ([*] or [n]) within 30 s.
    """
    for _ in range(attempts):
        dismiss_dialogs(page)
        page.click('.lm-MenuBar-itemLabel:text-is("Run")')
        page.click('.lm-Menu-itemLabel:text-is("Run All Cells")')
        try:
            page.wait_for_function(
                r"""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                         .some(p => /\[(\*|\d+)\]/.test(p.textContent))""",
                timeout=30_000,
            )
            return
        except Exception:
            continue
    raise TimeoutError("Run All Cells did not start any cell")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def copy_notebooks(target: Path) -> None:
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, target / nb.name)
