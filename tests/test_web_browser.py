"""End to end in headless Chromium (Debian's package, driven by Playwright): the project page sorted by a pinned
column, a run's page, and live updates on both pushed after the SDK logs and the consumer folds. Screenshots go
to test-artifacts/."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from web_support import fill_project, loss_min

import producer as mf
from consumer.web.server import ServerThread
from schemas.settings import Settings

from support import consume_all

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUNS = 8


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail("Debian's chromium is missing: run `make browser` (or `sudo apt-get install -y chromium`)")
    return path


class PublishClock:
    """Wall-clock time at which Redis announced each change of the project (i.e. when the fold was written)."""

    def __init__(self, settings: Settings) -> None:
        self.client = redis.Redis.from_url(settings.redis, password=settings.redis_password)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{settings.namespace}:*:changes:team/vision")
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message:
                self.seen.setdefault(message["data"].decode(), time.time())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()


@contextmanager
def project_page(settings: Settings) -> Iterator[tuple[str, Any]]:
    """`metricfold serve` of *settings* and headless Chromium on its team/vision page, all RUNS rows shown:
    (the server's URL, the Playwright page)."""
    from playwright.sync_api import expect, sync_playwright

    with ServerThread(settings) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/projects/team/vision")
            expect(page.locator("#runs tbody tr")).to_have_count(RUNS)
            yield url, page
        finally:
            browser.close()


def click_sort_twice(page: Any, path: str) -> None:
    """Sort the runs table by *path* from its header: descending (▼), then ascending (▲). Each click waits for the
    page's first live update: a click landing on the table it is about to replace would be lost."""
    from playwright.sync_api import expect

    for arrow in ("▼", "▲"):
        expect(page.locator("body")).to_have_attribute("data-updates", "1")
        page.locator(f'#runs th a[data-sort="{path}"]').click()
        expect(page.locator(f'#runs th a.sorted[data-sort="{path}"]')).to_contain_text(arrow)


def log_loss(settings: Settings, run: int, loss: float) -> None:
    """A trainer logs one more loss for a run (the SDK), and the consumer folds it."""
    with mf.init(entity="team", project="vision", run_id=f"r{run:02d}", settings=settings) as trainer:
        trainer.log({"loss": loss})
    consume_all(settings)


def test_browser_sorts_by_pinned_column_opens_a_run_and_sees_a_live_update(settings: Settings, artifacts_dir: Path) -> None:
    from playwright.sync_api import expect

    fill_project(settings, runs=RUNS)
    consume_all(settings)
    by_loss = sorted(range(RUNS), key=loss_min)

    with project_page(settings) as (url, page):
        # pin columns with the picker (grad.norm is not shown by default), then sort by loss.min from its header
        expect(page.locator('#runs th[data-col="grad.norm"]')).to_have_count(0)
        page.locator("#picker summary").click()
        page.locator('#picker input[value="grad.norm"]').check()
        page.locator('#picker input[value="loss.min"]').check()
        page.locator("#picker button").click()
        expect(page.locator('#runs th[data-col="grad.norm"]')).to_have_count(1)
        # each page replaces its table once right after loading (the live stream's catch-up fetch): a click
        # landing on the old header just then is lost, so click after it (a person would click again)
        click_sort_twice(page, "loss.min")
        order = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
        assert order == [f"r{i:02d}" for i in by_loss]
        cells = page.locator('#runs tbody td[data-col="loss.min"]').all_inner_texts()
        assert cells == [f"{loss_min(i):.6g}" for i in by_loss]
        page.screenshot(path=str(artifacts_dir / "web-project-page.png"), full_page=True)

        # open the run with the highest loss.min (the last row) and wait until its live stream is subscribed
        # live on the project page: the run with the highest loss.min logs a new minimum and moves to the top
        target = by_loss[-1]
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        expect(page.locator("body")).to_have_attribute("data-updates", "1")
        log_loss(settings, target, 0.002)
        expect(page.locator("#runs tbody tr").first).to_have_attribute("data-run", f"r{target:02d}", timeout=10_000)
        expect(page.locator('#runs tbody tr td[data-col="loss.min"]').first).to_have_text("0.002")

        page.locator("#runs tbody tr").first.locator("a").first.click()
        expect(page.locator("h1")).to_have_text(f"run-{target:02d}")
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        expect(page.locator("body")).to_have_attribute("data-updates", "1")
        value = page.locator('#summary span[data-path="loss.min"]')
        expect(value).to_have_text("0.002")
        page.evaluate(
            """() => { window.__sameDocument = true;
               new MutationObserver(() => { if (!window.__changedAt) window.__changedAt = Date.now(); })
                 .observe(document.getElementById('summary').parentNode, {childList: true, subtree: true}); }"""
        )

        clock = PublishClock(settings)
        try:
            log_loss(settings, target, 0.00125)
            expect(page.locator('#summary span[data-path="loss.min"]')).to_have_text("0.00125", timeout=10_000)
        finally:
            clock.close()

        assert page.evaluate("() => window.__sameDocument === true")  # updated in place, not reloaded
        changed_ms = page.evaluate("() => window.__changedAt")
        folded_s = clock.seen[f"r{target:02d}"]
        assert changed_ms / 1000 - folded_s < 1.0, f"the page changed {changed_ms / 1000 - folded_s:.3f} s after the fold"
        expect(page.locator("#run-events")).not_to_have_text("")
        page.screenshot(path=str(artifacts_dir / "web-run-page.png"), full_page=True)

        page.goto(f"{url}/runs/team/vision/r00")  # the run with a tensor: its percentile bar and .npy link
        expect(page.locator("svg.pbar")).to_have_count(1)
        expect(page.locator("a.download")).to_have_attribute("href", "/api/runs/team/vision/r00/tensor?path=weights")
        page.screenshot(path=str(artifacts_dir / "web-run-tensor.png"), full_page=True)


def test_browser_filters_sorts_and_sees_runs_enter_and_leave_the_filtered_set_live(
    settings: Settings, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    fill_project(settings, runs=RUNS)
    consume_all(settings)
    inside = sorted((i for i in range(RUNS) if loss_min(i) < 0.3), key=loss_min)  # loss.max = loss.min + 0.5 < 2
    outside = [i for i in range(RUNS) if loss_min(i) >= 0.3]
    assert inside and outside

    def rows() -> list[str]:
        return list(page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)"))

    with project_page(settings) as (_, page):
        # two filters typed into the bar, one after the other: the second submit keeps the first (the URL holds both)
        page.locator("#where").fill("loss.min < 0.3")
        page.locator("#where").press("Enter")
        expect(page.locator("#runs tbody tr")).to_have_count(len(inside))
        page.locator("#where").fill("loss.max < 2")
        page.locator("#filters button").click()
        expect(page.locator("#filters .chip")).to_have_count(2)
        assert "where=loss.min" in page.url and "where=loss.max" in page.url
        expect(page.locator("#runs tbody tr")).to_have_count(len(inside))

        # sort by loss.min from its header (shown: the filters test it): descending, then ascending; filters kept
        click_sort_twice(page, "loss.min")
        expect(page.locator("#filters .chip")).to_have_count(2)
        assert rows() == [f"r{i:02d}" for i in inside]

        # live: a run outside logs a new minimum and enters at the top; a run inside logs a large loss and leaves
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        expect(page.locator("body")).to_have_attribute("data-updates", "1")
        newcomer, leaver = outside[0], inside[-1]
        log_loss(settings, newcomer, 0.001)
        expect(page.locator("#runs tbody tr").first).to_have_attribute("data-run", f"r{newcomer:02d}", timeout=10_000)
        expect(page.locator("#runs tbody tr")).to_have_count(len(inside) + 1)
        log_loss(settings, leaver, 5.0)
        expect(page.locator(f'#runs tbody tr[data-run="r{leaver:02d}"]')).to_have_count(0, timeout=10_000)
        assert rows() == [f"r{i:02d}" for i in [newcomer, *inside[:-1]]]
        expect(page.locator("#matched")).to_contain_text(f"{len(inside)} of {RUNS} runs match the 2 filters")
        page.screenshot(path=str(artifacts_dir / "web-project-filtered.png"), full_page=True)

        # removing a filter from its chip: the leaver (loss.min still < 0.3) is back
        page.locator('#filters .chip[data-where^="loss.max"] a.remove').click()
        expect(page.locator("#filters .chip")).to_have_count(1)
        expect(page.locator(f'#runs tbody tr[data-run="r{leaver:02d}"]')).to_have_count(1)
