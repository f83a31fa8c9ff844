"""The participant page and the researcher dashboard, driven in Debian's Chromium against the real
annotation server (see conftest.py). Each test saves screenshots under test-output/screenshots."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import COMPLETION_CODE, PRACTICE, TRIALS, start_server

pytestmark = pytest.mark.browser

SIZE = 256
# The page's mapping is exact (Chromium gives pointer events fractional CSS coordinates), so the
# check is far tighter than the 0.5 px the protocol needs: it catches a half-pixel origin error.
EXACT_PX = 0.05
TOUCH_PX = 0.4  # touch points may be rounded to whole CSS pixels (1 CSS px = 0.66 photo px here)


# ------------------------------------------------------------------------------ helpers
def study_url(server, pid: str) -> str:
    return f"{server.url}/?PROLIFIC_PID={pid}&STUDY_ID=study-1&SESSION_ID=sess-{pid}&key={server.link_key}"


def add_css(page, css: str):
    """Apply ``css`` as a constructed stylesheet (the pages' Content-Security-Policy refuses an
    inline <style>, which Playwright's add_style_tag would add); returns its handle."""
    return page.evaluate_handle("css => { const s = new CSSStyleSheet(); s.replaceSync(css); "
                                "document.adoptedStyleSheets = [...document.adoptedStyleSheets, s]; return s; }", css)


def wait_screen(page, name: str):
    page.wait_for_selector(f"#screen-{name}:not([hidden])", state="visible")


def wait_item(page, pos: int, mode: str = "trial"):
    page.wait_for_selector(f"#screen-trial[data-ready='true'][data-pos='{pos}'][data-mode='{mode}']")


def photo_rect(page):
    return page.eval_on_selector(
        "#photo-img", "e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }")


def client_point(page, x: float, y: float):
    """Viewport (CSS px) position of photo pixel (x, y): pixel centres sit at (i + 0.5) / 256 of
    the displayed image — the independent reference of the page's mapping."""
    left, top, width, height = photo_rect(page)
    return left + (x + 0.5) / SIZE * width, top + (y + 0.5) / SIZE * height


def click_photo(page, x: float, y: float):
    page.mouse.click(*client_point(page, x, y))


def marker(page):
    box = page.locator("#photo-box")
    return float(box.get_attribute("data-x")), float(box.get_attribute("data-y"))


def shot(page, screenshot_dir, name: str, full_page: bool = False):
    page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=full_page, scale="css")


def session_of(server, pid: str) -> dict:
    """The server's view of a participant's session (POST /api/sessions resumes, never re-plans)."""
    import httpx

    r = httpx.post(f"{server.url}/api/sessions", json={"prolific_pid": pid, "study_id": "study-1",
                                                       "session_id": f"sess-{pid}", "link_key": server.link_key},
                   timeout=10)
    assert r.status_code in (200, 201), r.text
    return r.json()


def clicks_of(admin, participant: str) -> list[dict]:
    r = admin.get("/api/admin/clicks", params={"format": "jsonl"})
    assert r.status_code == 200, r.text
    rows = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    return [row for row in rows if row["participant"] == participant]


def task_key(server, trial: dict) -> tuple[str, int]:
    """(photo path, keypoint) of a trial: one pair per category in the test study."""
    files = server.study_files
    cats = [p.split("/")[-2] for p in files["photo"]]
    return files["photo"][cats.index(trial["category"])], int(trial["keypoint"])


def skip_to_trials(page, pid: str):
    """A returning participant: consent given and practice done earlier (remembered per PID)."""
    page.context.add_init_script(f"localStorage.setItem('psc6k:v1:{pid}:consent', 'true');"
                                 f"localStorage.setItem('psc6k:v1:{pid}:practiceDone', 'true');")


def pass_consent_and_practice(page, screenshot_dir=None):
    """Consent -> instructions -> the practice trials (each clicked on its known answer)."""
    wait_screen(page, "consent")
    page.click("#consent-yes")
    wait_screen(page, "instructions")
    page.click("#instructions-next")
    for i, item in enumerate(PRACTICE):
        wait_item(page, i, "practice")
        click_photo(page, *item["answer"])
        page.click("#confirm")
        page.wait_for_selector("#feedback[data-result='good']")
        page.click("#practice-next")
    wait_screen(page, "ready")
    page.click("#ready-next")


# ------------------------------------------------------------------------------ tests
def test_participant_completes_study_with_pixel_exact_clicks(new_page, server, admin, screenshot_dir):
    """The whole flow at devicePixelRatio 2 with the photo shown at 389.5 CSS px and the page
    scrolled; the database must hold the clicked photo pixels within 0.5 px."""
    page = new_page(device_scale_factor=2, has_touch=True)
    posts = []
    page.on("request", lambda r: posts.append(r.post_data_json) if r.method == "POST" and r.url.endswith("/clicks") else None)
    pid = "PIXEL0001"
    page.goto(study_url(server, pid))
    assert page.evaluate("devicePixelRatio") == 2

    wait_screen(page, "consent")
    assert "research" in page.inner_text("#consent-text")
    shot(page, screenshot_dir, "01-consent")
    page.click("#consent-yes")

    wait_screen(page, "instructions")
    assert page.locator(".example img").evaluate("e => e.complete && e.naturalWidth > 0")
    shot(page, screenshot_dir, "02-instructions", full_page=True)
    page.click("#instructions-next")

    # practice 1: on the known answer -> praised; practice 2: far off -> shown the answer
    wait_item(page, 0, "practice")
    assert page.inner_text("#progress-text") == f"1 / {len(PRACTICE)}"
    click_photo(page, *PRACTICE[0]["answer"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#feedback[data-result='good']")
    shot(page, screenshot_dir, "03-practice-feedback")
    page.keyboard.press("Enter")
    wait_item(page, 1, "practice")
    ax, ay = PRACTICE[1]["answer"]
    click_photo(page, min(ax + 70, 250), max(ay - 60, 5))
    page.click("#confirm")
    page.wait_for_selector("#feedback[data-result='miss']")
    assert page.locator("#answer").get_attribute("visibility") == "visible"
    page.click("#practice-next")

    wait_screen(page, "ready")
    shot(page, screenshot_dir, "04-ready")
    page.click("#ready-next")

    # A different CSS size for the photo only, a non-integer one, and a scrolled page.
    resize = add_css(page, "#photo-box { --img: 389.5px; } body { padding-top: 260px; }")
    page.evaluate("window.scrollTo(0, 200)")
    targets = [(0.0, 0.0), (255.0, 255.0), (17.25, 203.5), (128.0, 64.0), (200.75, 31.0)]
    assert len(targets) == TRIALS
    expected, tol = {}, {}
    for i, (x, y) in enumerate(targets):
        wait_item(page, i)
        assert page.inner_text("#progress-text") == f"{i + 1} / {TRIALS}"
        if i == TRIALS - 1:  # the last one also under CSS zoom
            add_css(page, "#screen-trial .stage { zoom: 0.8; }")
        left, top, width, height = photo_rect(page)
        want = 389.5 * (0.8 if i == TRIALS - 1 else 1.0)
        assert abs(width - want) < 0.01 and top < 400, (width, top)  # the new size, page scrolled
        trial_id = int(page.get_attribute("#screen-trial", "data-trial-id"))
        if i == 0:
            click_photo(page, 90, 90)  # a first click, then a second one moves the marker
            click_photo(page, x, y)
            page.keyboard.press("Enter")
        elif i == 1:
            click_photo(page, x, y)
            page.keyboard.press(" ")
        elif i == 2:
            page.touchscreen.tap(*client_point(page, x, y))
            assert marker(page) == pytest.approx((x, y), abs=TOUCH_PX)
            # a double Confirm (two clicks and an Enter in one task) sends one click
            page.evaluate("() => { const b = document.getElementById('confirm'); b.click(); b.click();"
                          " document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})); }")
        elif i == 3:
            click_photo(page, x - 3, y + 8)  # then nudged with the keyboard: 3 right, 1 big step up
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Shift+ArrowUp")
            page.click("#confirm")
        else:
            click_photo(page, x, y)
            page.click("#confirm")
        expected[trial_id] = (x, y)
        tol[trial_id] = TOUCH_PX if i == 2 else EXACT_PX

    wait_screen(page, "complete")
    assert page.inner_text("#completion-code") == COMPLETION_CODE
    resize.evaluate("s => { document.adoptedStyleSheets = document.adoptedStyleSheets.filter(x => x !== s); }")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, screenshot_dir, "07-complete")

    # the database holds exactly those pixels, once each
    sess = session_of(server, pid)
    assert sess["answered_count"] == TRIALS
    rows = clicks_of(admin, sess["participant"])
    assert len(rows) == TRIALS
    by_key = {(r["photo"], int(r["keypoint"])): r for r in rows}
    for trial in sess["trials"]:
        row = by_key[task_key(server, trial)]
        x, y = expected[trial["trial_id"]]
        t = tol[trial["trial_id"]]
        assert row["x"] == pytest.approx(x, abs=t) and row["y"] == pytest.approx(y, abs=t), (trial, row)
        assert row["display"]["device_pixel_ratio"] == 2
        assert row["display"]["displayed_width"] in (pytest.approx(389.5), pytest.approx(389.5 * 0.8, abs=0.05))
        assert row["display"]["natural_width"] == SIZE
    inputs = sorted(r["display"]["input"] for r in rows)
    assert inputs == ["keyboard", "mouse", "mouse", "mouse", "touch"]
    assert len(posts) == TRIALS and len({p["client_id"] for p in posts}) == TRIALS  # no resend

    # the redirect goes to the configured completion URL, carrying the code
    page.click("#redirect-link")
    page.wait_for_url(f"**/prolific-complete?cc={COMPLETION_CODE}")
    assert f"cc={COMPLETION_CODE}" in page.url


def test_reload_resumes_and_back_does_not_duplicate(new_page, server, admin, screenshot_dir):
    page = new_page()
    pid = "RELOAD0001"
    page.goto(study_url(server, pid))
    pass_consent_and_practice(page)

    wait_item(page, 0)
    # everything needed fits a 1280 x 720 screen without scrolling
    for sel in ("#sketch-img", "#photo-img", "#confirm", "#progress-text"):
        box = page.locator(sel).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 720 and box["x"] + box["width"] <= 1280, (sel, box)
    # the next trial's images are preloaded while this one is shown
    upcoming = session_of(server, pid)["trials"][1]
    page.wait_for_function("urls => urls.every(u => performance.getEntriesByType('resource')"
                           ".some(e => e.name.endsWith(u)))", arg=[upcoming["sketch_url"], upcoming["photo_url"]])
    for i in range(2):
        wait_item(page, i)
        click_photo(page, 40 + 50 * i, 120)
        if i == 1:
            shot(page, screenshot_dir, "05-trial")
        page.click("#confirm")
    wait_item(page, 2)
    page.wait_for_selector("#save-status[data-pending='0'].ok")

    page.reload()
    wait_item(page, 2)  # straight back to the first unanswered trial: no consent, no practice
    assert page.inner_text("#progress-text") == f"3 / {TRIALS}"
    assert "Welcome back" in page.inner_text("#toast")

    click_photo(page, 100, 100)
    page.click("#confirm")
    wait_item(page, 3)
    page.go_back()  # Back stays on the current trial and sends nothing again
    page.wait_for_timeout(200)
    wait_item(page, 3)
    assert "cannot be changed" in page.inner_text("#toast")
    page.wait_for_selector("#save-status[data-pending='0'].ok")

    sess = session_of(server, pid)
    assert sess["answered_count"] == 3 and sess["next_index"] == 3
    assert len(clicks_of(admin, sess["participant"])) == 3


def test_offline_submit_is_retried_and_stored_once(new_page, server, admin, screenshot_dir):
    page = new_page()
    ctx = page.context
    pid = "OFFLINE0001"
    # a returning participant who has consented and practised already
    ctx.add_init_script(f"localStorage.setItem('psc6k:v1:{pid}:consent', 'true');"
                        f"localStorage.setItem('psc6k:v1:{pid}:practiceDone', 'true');")
    attempts = []
    page.on("request", lambda r: attempts.append(r.post_data_json["client_id"])
            if r.method == "POST" and r.url.endswith("/clicks") else None)
    page.goto(study_url(server, pid))
    wait_item(page, 0)
    click_photo(page, 77, 155)

    ctx.set_offline(True)
    page.click("#confirm")
    page.wait_for_selector("#save-status.warn[data-pending='1']")
    assert "Connection problem" in page.inner_text("#save-status")
    queued = page.evaluate(f"JSON.parse(localStorage.getItem('psc6k:v1:{pid}:queue'))")
    assert len(queued) == 1 and queued[0]["x"] == pytest.approx(77, abs=EXACT_PX)
    page.wait_for_timeout(1500)  # at least one retry fails while offline
    shot(page, screenshot_dir, "06-offline-retrying")
    assert page.get_attribute("#save-status", "data-pending") == "1"

    ctx.set_offline(False)
    page.wait_for_selector("#save-status.ok[data-pending='0']", timeout=20000)
    assert len(set(attempts)) == 1  # every attempt carried the same client_id

    sess = session_of(server, pid)
    rows = clicks_of(admin, sess["participant"])
    assert len(rows) == 1
    assert (rows[0]["x"], rows[0]["y"]) == (pytest.approx(77, abs=EXACT_PX), pytest.approx(155, abs=EXACT_PX))
    assert sess["answered_count"] == 1
    assert page.evaluate(f"JSON.parse(localStorage.getItem('psc6k:v1:{pid}:queue'))") == []


def test_consent_declined_ends_politely_and_records_nothing(new_page, server, admin, screenshot_dir):
    before = admin.get("/api/admin/progress").json()["sessions"]["started"]
    page = new_page()
    page.goto(study_url(server, "DECLINE0001"))
    wait_screen(page, "consent")
    page.click("#consent-no")
    wait_screen(page, "declined")
    assert "Thank you for your time" in page.inner_text("#screen-declined")
    shot(page, screenshot_dir, "08-declined")
    assert admin.get("/api/admin/progress").json()["sessions"]["started"] == before


def test_missing_prolific_id_gets_a_clear_page(new_page, server, screenshot_dir):
    page = new_page()
    page.goto(f"{server.url}/?STUDY_ID=study-1")
    wait_screen(page, "missing-pid")
    assert "Prolific ID" in page.inner_text("#screen-missing-pid")
    shot(page, screenshot_dir, "09-missing-pid")


def test_dashboard_shows_progress_and_live_pair(new_page, server, admin, screenshot_dir):
    # make sure at least one keypoint has clicks, whatever ran before
    import httpx

    sess = session_of(server, "DASH0001")
    t = sess["trials"][0]
    r = httpx.post(f"{server.url}/api/sessions/{sess['session_token']}/clicks",
                   json={"trial_id": t["trial_id"], "x": 128, "y": 128, "rt_ms": 1500, "client_id": "dash-1"})
    assert r.status_code in (200, 201), r.text

    page = new_page()
    page.goto(f"{server.url}/admin")
    wait_screen(page, "login")
    page.fill("#token-input", "wrong-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in page.inner_text("#login-error")

    page.fill("#token-input", server.admin_token)
    page.click("#login-form button[type=submit]")
    wait_screen(page, "dash")
    page.wait_for_selector("#cat-chart g[data-category]")
    assert page.locator("#cat-chart g[data-category]").count() == 5
    progress = admin.get("/api/admin/progress").json()
    assert page.inner_text("#c-started") == str(progress["sessions"]["started"])
    # sessions under the speed floor and refused resumes (both counted by the server)
    assert page.inner_text("#c-too-fast") == str(progress["sessions"]["too_fast"])
    assert page.inner_text("#c-resume-refused") == str(progress["sessions"]["resume_refused"])
    # the study URL to paste into Prolific: this server, Prolific's placeholders, the link key
    page.wait_for_function("document.getElementById('link-url').value.length > 0")
    assert page.input_value("#link-url") == (f"{server.url}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID="
                                             f"{{{{%STUDY_ID%}}}}&SESSION_ID={{{{%SESSION_ID%}}}}&key={server.link_key}")
    page.wait_for_selector(".live-pair g.click")
    page.wait_for_selector(".live-pair g.centroid")
    live = admin.get("/api/admin/live").json()
    assert page.locator(".live-pair g.click").count() == len(live["clicks"])
    page.wait_for_function("[...document.querySelectorAll('.live-pair img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("sessionStorage.getItem('psc6k:admin-token')") == server.admin_token
    shot(page, screenshot_dir, "10-dashboard", full_page=True)


def test_refused_click_is_asked_again_not_dropped(new_page, server, admin):
    """A click the server refuses for good (4xx) leaves the queue but the trial stays open: the
    participant is asked for it again and the completion code comes only when all are stored."""
    page = new_page()
    pid = "REFUSED0001"
    skip_to_trials(page, pid)
    refused = []

    def refuse_first(route):
        if route.request.method == "POST" and not refused:
            refused.append(route.request.post_data_json["trial_id"])
            route.fulfill(status=422, content_type="application/json",
                          body=json.dumps({"detail": "invalid request: x: refused by the test"}))
        else:
            route.continue_()

    page.route("**/api/sessions/*/clicks", refuse_first)
    page.goto(study_url(server, pid))
    answered = {}
    for _ in range(TRIALS + 3):
        page.wait_for_selector("#screen-trial[data-ready='true']:not([hidden]), #screen-complete:not([hidden])")
        if page.is_visible("#screen-complete"):
            break
        trial_id = int(page.get_attribute("#screen-trial", "data-trial-id"))
        x, y = (30.0 + 7 * len(answered), 60.0) if trial_id not in answered else (222.0, 111.0)
        click_photo(page, x, y)
        page.click("#confirm")
        answered[trial_id] = (x, y)
    wait_screen(page, "complete")
    assert len(refused) == 1 and answered[refused[0]] == (222.0, 111.0)  # asked again, answered again

    sess = session_of(server, pid)
    rows = clicks_of(admin, sess["participant"])
    assert len(rows) == TRIALS
    by_key = {(r["photo"], int(r["keypoint"])): (r["x"], r["y"]) for r in rows}
    for trial in sess["trials"]:
        assert by_key[task_key(server, trial)] == pytest.approx(answered[trial["trial_id"]], abs=EXACT_PX)


def test_expired_lease_says_so_and_keeps_the_clicks(new_page, study_files, tmp_path, screenshot_dir):
    import httpx

    offset = [0.0]
    live = start_server(study_files, tmp_path / "lease.db", clock=lambda: time.time() + offset[0],
                        lease_minutes=30)
    try:
        page = new_page()
        pid = "LEASE0001"
        skip_to_trials(page, pid)
        page.goto(study_url(live, pid))
        wait_item(page, 0)
        click_photo(page, 50, 50)
        page.click("#confirm")
        wait_item(page, 1)
        page.wait_for_selector("#save-status.ok[data-pending='0']")

        offset[0] = 31 * 60.0  # the participant comes back after the lease lapsed
        click_photo(page, 60, 60)
        page.click("#confirm")
        wait_screen(page, "error")
        assert "expired" in page.inner_text("#error-title")
        assert "kept" in page.inner_text("#screen-error")
        shot(page, screenshot_dir, "11-expired")

        page.reload()
        wait_screen(page, "error")
        assert "expired" in page.inner_text("#error-title")

        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.admin_token}"}) as c:
            participant = session_of(live, pid)["participant"]
            assert len(clicks_of(c, participant)) == 1  # the click given in time is kept
    finally:
        live.stop()
