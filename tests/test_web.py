"""`pulse serve` in a real browser: Debian's Chromium driven by Playwright, against a server on 127.0.0.1.

Skipped, with one line saying why, where Chromium or Playwright is missing
(install: `apt-get install chromium`; Playwright comes with the test extras).
Every request any page makes is recorded; the last test checks they all went
to the server.
"""

import io
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch

from pulse_sr.images import save_image

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()), None)
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[test]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium")

MAX_BYTES = 100_000
MAX_PIXELS = 1_000_000
REQUESTS = []


@pytest.fixture(scope="module")
def server():
    from pulse_sr.web.app import ServeSettings, serve

    app, url, workdir = serve(ServeSettings(port=0, model="default", device="cpu", max_bytes=MAX_BYTES,
                                            max_pixels=MAX_PIXELS, max_steps=2000), block=False)
    yield url, workdir
    app.close()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.on("request", lambda r: REQUESTS.append(r.url))
    pg = context.new_page()
    pg.goto(server[0])
    pg.wait_for_selector("#run")
    yield pg
    context.close()


@pytest.fixture(scope="module")
def face8(tmp_path_factory, default_model):
    """An 8×8 LR face: a sample of the bundled model, downscaled."""
    from pulse_sr.ops.resample import bicubic_downscale

    m = default_model
    with torch.no_grad():
        z = torch.randn(1, m.generator.z_dim, generator=torch.Generator().manual_seed(3))
        hr = ((m.generator.sample(z, truncation_psi=0.7, noise_mode="const") + 1) / 2).clamp(0, 1)
    return save_image(bicubic_downscale(hr, 8)[0].clamp(0, 1), tmp_path_factory.mktemp("in") / "face8.png")


def start(pg, file=None, steps=5, samples=2, example=None):
    if file is not None:
        pg.set_input_files("#upload input[type=file]", str(file))
        pg.wait_for_function("document.querySelector('#upload').innerText.includes('.')")  # the file's name
    if example is not None:
        pg.check(f"#example input[value='{example}']")
    pg.fill("#steps input", str(steps))
    pg.fill("#samples input[type=number]", str(samples))
    pg.press("#samples input[type=number]", "Enter")
    pg.click("#run")


def error_text(pg, timeout=30_000):
    pg.wait_for_selector(".toast-body, [data-testid='toast-body']", timeout=timeout)
    return pg.inner_text(".toast-body, [data-testid='toast-body']")


def test_the_page_loads_with_the_notice(page):
    assert page.title() == "PULSE"
    assert "These are imaginary people" in page.inner_text("#notice")
    assert page.is_visible("#stop") and page.is_visible("#cancel")


def test_an_uploaded_8x8_face_gives_k_images_and_badges(page, face8):
    start(page, face8, steps=5, samples=2)
    page.wait_for_selector(".pulse-card", timeout=60_000)
    assert len(page.query_selector_all(".pulse-card")) == 2
    assert len(page.query_selector_all(".pulse-badge")) == 2
    assert "operator bicubic:8" in page.inner_text(".pulse-card")
    assert "Where the 2 faces disagree" in page.inner_text(".pulse-spread")  # the spread of K = 2
    assert re.search(r"\d/2 within ε=0\.002", page.inner_text("#status"))
    # "Download all": a zip of the PNGs (2 faces, their downscales and residuals, the spread) and report.json
    link = page.wait_for_selector("#download a[href]", timeout=10_000)
    body = page.request.get(link.get_attribute("href")).body()
    names = sorted(zipfile.ZipFile(io.BytesIO(body)).namelist())
    assert names == ["input_0.png", "input_0_lr.png", "input_0_residual.png", "input_1.png", "input_1_lr.png",
                     "input_1_residual.png", "input_spread.png", "report.json"]


@pytest.mark.parametrize("example", ["sampled face (8×8)", "aligned astronaut photo"])
def test_the_built_in_examples_need_no_upload(page, example):
    start(page, example=example, steps=3, samples=1)
    page.wait_for_selector(".pulse-card", timeout=90_000)
    assert len(page.query_selector_all(".pulse-badge")) == 1


def test_a_text_file_gets_a_message_and_a_good_run_still_works(page, face8, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image at all")
    start(page, bad)
    assert "not an image" in error_text(page)
    page.reload()  # a fresh upload field; the server is the same one
    page.wait_for_selector("#run")
    start(page, face8, steps=5, samples=1)
    page.wait_for_selector(".pulse-card", timeout=60_000)
    assert len(page.query_selector_all(".pulse-card")) == 1


def test_uploads_over_the_byte_or_pixel_limit_get_a_message(page, tmp_path):
    big = tmp_path / "noise.png"  # about 270 KB of noise: over the 100 KB limit
    save_image(torch.rand(3, 300, 300, generator=torch.Generator().manual_seed(0)), big)
    assert big.stat().st_size > MAX_BYTES
    page.set_input_files("#upload input[type=file]", str(big))
    page.click("#run")
    assert re.search(r"(?i)(exceeds|too large|at most|max)", error_text(page))
    page.reload()
    page.wait_for_selector("#run")
    wide = tmp_path / "wide.png"  # 1.1 MP of one colour: a few KB, over the 1 MP limit
    save_image(torch.full((3, 1000, 1100), 0.5), wide)
    start(page, wide)
    assert "at most 1 MP" in error_text(page)


def test_two_browsers_at_once_both_finish_and_the_second_sees_its_place(browser, server, face8):
    pages = []
    for _ in range(2):
        ctx = browser.new_context()
        ctx.on("request", lambda r: REQUESTS.append(r.url))
        pg = ctx.new_page()
        pg.goto(server[0])
        pg.wait_for_selector("#run")
        pages.append(pg)
    start(pages[0], face8, steps=80, samples=2)
    pages[0].wait_for_function("document.querySelector('#status').innerText.startsWith('step')", timeout=60_000)
    start(pages[1], face8, steps=5, samples=1)
    pages[1].wait_for_function("/queue: \\d+\\/\\d+/.test(document.body.innerText)", timeout=20_000)
    for pg, k in zip(pages, (2, 1)):
        pg.wait_for_selector(".pulse-card", timeout=180_000)
        assert len(pg.query_selector_all(".pulse-card")) == k
    for pg in pages:
        pg.context.close()


def test_stop_keeps_the_best_so_far_and_cancel_ends_the_search(page, face8):
    start(page, face8, steps=2000, samples=1)
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('step')", timeout=60_000)
    page.click("#stop")
    page.wait_for_selector(".pulse-card", timeout=30_000)  # long before 2000 steps
    assert "stopped early" in page.inner_text("#status")
    steps_done = int(re.search(r"· (\d+) steps", page.inner_text(".pulse-card")).group(1))
    assert 1 <= steps_done < 2000

    page.reload()
    page.wait_for_selector("#run")
    start(page, face8, steps=2000, samples=1)
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('step')", timeout=60_000)
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#status').innerText.trim() === 'Cancelled.'", timeout=30_000)
    t = time.monotonic()
    # The device is free again at once: a short run right after (same upload) finishes, not 2000 steps later.
    start(page, None, steps=5, samples=1)
    page.wait_for_selector(".pulse-card", timeout=60_000)
    assert time.monotonic() - t < 45


def test_every_request_went_to_the_server(server):
    assert REQUESTS, "no request was recorded"
    host = server[0].split("/")[2]
    elsewhere = sorted({u for u in REQUESTS if not u.startswith(("data:", "blob:")) and u.split("/")[2] != host})
    assert elsewhere == []
