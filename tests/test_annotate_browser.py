"""The rating page in a real headless Chromium: sign in through a rater's link, rate one prompt with the keyboard, find it in SQLite, resume after
a server restart, and lose nothing given while the server was down (not even with the tab closed).

Needs Debian's ``chromium`` and the ``playwright`` package (no browser download: ``executable_path``). With
``MSDM_DOCS_SCREENSHOTS=docs/images`` the screenshots of docs/expert-evaluation.md are written there.
"""

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from msdm.annotate.server import StudyServer
from msdm.annotate.store import RatingStore
from msdm.annotate.study import ASPECT_IDS, KEY_FILE, build_study, load_key, load_study
from msdm.annotate.testing import write_study_inputs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("MSDM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium ({CHROMIUM or 'not on PATH'}): `apt-get install chromium` (Debian) or set "
                    "MSDM_CHROMIUM to a Chromium binary")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def expect(locator):
    from playwright.sync_api import expect as _expect

    return _expect(locator)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, kvasir_dir):
    root = tmp_path_factory.mktemp("browser")
    inp = write_study_inputs(root / "inputs", kvasir_dir / "images", num_pairs=2, size=96, num_real=5)
    return build_study(root / "study", inp["models"], inp["real"], paired=True, real_mapping=inp["real_mapping"], num_prompts=4,
                       global_images=4, seed=0, title="Polyp generators: expert study")


def _screenshot(page, name, tmp_path, **kw):
    """Save a screenshot under tmp_path, and for the docs when asked; palette PNG keeps it small (< 300 KB)."""
    from PIL import Image

    path = tmp_path / name
    page.screenshot(path=str(path), **kw)
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    assert path.stat().st_size < 300_000
    target = os.environ.get("MSDM_DOCS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def _rows(db, rater, prompt):
    with sqlite3.connect(db) as c:
        return {(i, a): v for i, a, v in c.execute(
            "SELECT item, aspect, value FROM answers WHERE rater = ? AND prompt = ?", (rater, prompt))}


def test_rate_one_prompt_resume_and_offline_answers(browser, study_dir, tmp_path):
    db = tmp_path / "ratings.sqlite"
    srv = StudyServer(study_dir, port=0, db_path=db)
    srv.start_in_thread()
    port = srv.port
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    token = srv.store.issue_link("rater01")
    try:
        page.goto(srv.url)  # without the rater's link: only the request for it
        page.wait_for_selector("#login:not([hidden])")
        page.goto(srv.link(token))
        page.wait_for_selector("#rate:not([hidden])")
        assert page.inner_text("#where").startswith("Prompt 1 of 4")
        study = load_study(study_dir)
        assert page.inner_text("#prompt-text") == f"“{study['prompts'][0]['text']}”"
        assert page.locator("section.real img").count() == 5 and page.locator("#set-A img").count() == 10
        # real reference images come first, then the models A, B, C
        order = page.eval_on_selector_all("#rate section.block h2", "hs => hs.map(h => h.textContent)")
        assert order[0].startswith("Real") and order[1:4] == ["Model A", "Model B", "Model C"]
        # every image is shown at one size: real references are not larger than the model sets (a rater bias)
        page.wait_for_timeout(300)
        sizes = page.eval_on_selector_all(
            "#rate img", "ims => ims.map(i => { const r = i.getBoundingClientRect(); return [r.width, r.height]; })")
        assert len(sizes) == 5 + 3 * 10 and len({(round(w), round(h)) for w, h in sizes}) == 1, sizes
        assert sizes[0][0] > 60  # still a usable thumbnail at this viewport

        # -- rate it with the keyboard only: digits answer the focused question and move on
        scores = {"A": [7, 8, 6, 5, 10, 9], "B": [3, 4, 2, 1, 5, 3], "C": [5, 5, 6, 5, 4, 5]}
        for letter in "ABC":
            for v in scores[letter]:
                if v == 10:
                    page.keyboard.press("1")
                    page.keyboard.press("0")
                else:
                    page.keyboard.press(str(v))  # a lone "1" waits briefly for a "0"; the next digit moves on
            if letter == "A":
                expect(page.locator("#save-state")).to_contain_text("all answers saved")
                page.mouse.wheel(0, -10000)  # back to the top: the prompt, the real images, model A rated
                page.wait_for_timeout(300)
                _screenshot(page, "annotate-prompt.png", tmp_path)
                page.locator("#set-B fieldset.choice input").first.focus()
        page.wait_for_timeout(800)
        ranks = {"A": 2, "B": 4, "C": 3, "real": 1}
        for item in ("A", "B", "C", "real"):
            page.keyboard.press(str(ranks[item]))
        expect(page.locator("#save-state")).to_contain_text("all answers saved")
        _screenshot(page, "annotate-rank.png", tmp_path)

        # the lightbox: click an image, Escape closes it
        page.locator("#set-B img").nth(2).click()
        assert page.is_visible("#lightbox") and "Model B — image 3 of 10" in page.inner_text("#lightbox-caption")
        page.keyboard.press("Escape")
        assert not page.is_visible("#lightbox")

        page.locator("#next").focus()
        page.keyboard.press("n")
        expect(page.locator("#where")).to_contain_text("Prompt 2 of 4")

        # -- every answer is in SQLite, with its value
        want = {(letter, a): v for letter in "ABC" for a, v in zip(ASPECT_IDS, scores[letter])}
        want.update({(item, "rank"): r for item, r in ranks.items()})
        assert _rows(db, "rater01", 0) == want
        # unblinded, the ranks belong to the models the key says
        key = load_key(study, study_dir / KEY_FILE)
        assert set(key["prompts"][0]["letters"]) == {"A", "B", "C"}

        # -- an incomplete prompt cannot be left forwards
        page.keyboard.press("5")
        page.keyboard.press("n")
        assert page.inner_text("#where").startswith("Prompt 2 of 4")
        assert "missing" in page.inner_text("#missing")
        expect(page.locator("#save-state")).to_contain_text("all answers saved")
        assert _rows(db, "rater01", 1) == {("A", "clinical_realism"): 5}
    finally:
        page.close()
        srv.shutdown()
        srv.server_close()

    # -- a restarted server resumes the rater at the next prompt (a fresh browser: nothing remembered locally)
    srv = StudyServer(study_dir, port=port, db_path=db)
    srv.start_in_thread()
    fresh = browser.new_context(viewport={"width": 1200, "height": 900})
    page = fresh.new_page()
    try:
        page.goto(srv.link(token))
        page.wait_for_selector("#rate:not([hidden])")
        assert page.inner_text("#where").startswith("Prompt 2 of 4")
        assert page.is_checked("#rate fieldset.choice:first-of-type input[value='5']")
        page.keyboard.press("p")
        expect(page.locator("#where")).to_contain_text("Prompt 1 of 4")
        assert page.locator("#set-A input:checked").first.get_attribute("value") == "7"

        # -- the server goes down; an answer given now waits in the page, survives the tab being closed, and is
        #    saved when the page is opened again
        page.keyboard.press("n")
        expect(page.locator("#where")).to_contain_text("Prompt 2 of 4")
        srv.shutdown()
        srv.server_close()
        page.locator("#set-A fieldset.choice").nth(1).locator("input").first.focus()
        page.keyboard.press("8")
        expect(page.locator("#save-state")).to_contain_text("not saved")
        page.close()
        assert _rows(db, "rater01", 1) == {("A", "clinical_realism"): 5}
        srv = StudyServer(study_dir, port=port, db_path=db)
        srv.start_in_thread()
        page = fresh.new_page()
        page.goto(srv.url)  # the link's cookie is remembered by this browser: straight back in
        expect(page.locator("#save-state")).to_contain_text("all answers saved")
        assert _rows(db, "rater01", 1) == {("A", "clinical_realism"): 5, ("A", "prompt_faithfulness"): 8}

        # -- the other prompts rated (through the store), a reload lands on the Global Preference page
        store = RatingStore(db, study)
        for k in (1, 2, 3):
            for letter in "ABC":
                for a in ASPECT_IDS:
                    store.save("rater01", k, letter, a, 6)
            for rank, item in enumerate(["real", "A", "B", "C"], start=1):
                store.save("rater01", k, item, "rank", rank)
        page.reload()
        expect(page.locator("#where")).to_contain_text("Global preference")
        assert page.locator("#global-A img").count() == 4  # one image from each of 4 prompts, per model
        for v in ("2", "1", "3"):
            page.keyboard.press(v)
        expect(page.locator("#save-state")).to_contain_text("all answers saved")
        _screenshot(page, "annotate-global.png", tmp_path)
        page.keyboard.press("n")
        expect(page.locator("#done")).to_be_visible()
        assert _rows(db, "rater01", -1) == {("A", "global_rank"): 2, ("B", "global_rank"): 1, ("C", "global_rank"): 3}
        assert store.progress("rater01")["next"] == "done"
        assert not errors, errors
    finally:
        page.close()
        srv.shutdown()
        srv.server_close()
