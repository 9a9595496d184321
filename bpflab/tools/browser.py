"""A notebook run in a real browser: headless Chromium opens it in JupyterLab and runs every cell,
as a student's click on Run > Run All Cells does. The browser test (tests/test_browser.py) and
`make vm-vagrant` (JupyterLab inside the course VM, through Vagrant's port forward) both use it.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# As root, and with no network but the package registries: no sandbox, nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_notebook(url: str, done: str, screenshot: Path, seconds: float, shown: str = "") -> str:
    """Open `url` (a notebook in JupyterLab, token included), run all its cells, wait until `done`
    shows in an output, and return every output's text; the page is saved as `screenshot`, with
    `shown` scrolled into view if given (a failure's page too)."""
    from playwright.sync_api import sync_playwright

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.locator(".jp-Notebook").first.wait_for(timeout=seconds * 1000)
            # The status bar reads "Python 3 (ipykernel) | Idle" once the kernel is connected.
            page.wait_for_function("document.body.innerText.includes('ipykernel) | Idle')",
                                   timeout=seconds * 1000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator('li[data-command="runmenu:run-all"]').click()
            page.get_by_text("[1]:").first.wait_for(state="attached", timeout=seconds * 1000)
            page.get_by_text(done).first.wait_for(state="attached", timeout=seconds * 1000)
            outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            if shown:
                page.get_by_text(shown).first.scroll_into_view_if_needed()
        finally:
            page.screenshot(path=str(screenshot))
            browser.close()
    return outputs
