/* PSC6K participant page: consent -> instructions -> practice -> trials -> completion.
 *
 * Never-lose-work design: a confirmed click is first written to localStorage (with its
 * client_id, the server's idempotency key), then sent; it leaves the queue only when the server
 * answers 2xx (stored) or 409 (that trial is already stored). Transient failures are retried
 * with exponential backoff and a visible status. The completion code is requested only after
 * the queue is empty, and the server refuses it unless it holds every trial.
 *
 * Coordinates: x, y are pixels of the 256 x 256 photo, x = column, y = row, origin at the centre
 * of the top-left pixel, so the displayed image's left edge is x = -0.5 and its right edge 255.5:
 *   x = (clientX - rect.left) / rect.width * 256 - 0.5
 * with rect the image's own bounding box at the moment of the event (CSS size, page zoom,
 * scrolling and devicePixelRatio all cancel out in that ratio).
 */
(function () {
  "use strict";
  const { uuid4, fetchJson, $, showScreen, setParagraphs } = PSC6K;

  const params = new URLSearchParams(window.location.search);
  const PID = (params.get("PROLIFIC_PID") || "").trim();
  const STUDY_ID = (params.get("STUDY_ID") || "").trim();
  const SESSION_ID = (params.get("SESSION_ID") || "").trim();
  const LINK_KEY = (params.get("key") || "").trim();  // the study link's key: admits this link's visitors
  const RETRY_MAX_MS = 15000;

  // ---------------------------------------------------------------- storage (per participant)
  const store = {
    key(name) { return `psc6k:v1:${PID}:${name}`; },
    get(name, fallback) {
      try {
        const v = window.localStorage.getItem(this.key(name));
        return v === null ? fallback : JSON.parse(v);
      } catch (e) { return fallback; }
    },
    set(name, value) {
      try { window.localStorage.setItem(this.key(name), JSON.stringify(value)); return true; } catch (e) { return false; }
    },
  };

  // ---------------------------------------------------------------- state
  const S = {
    study: null,
    token: null,
    trials: [],           // the session's trials, in order
    answered: new Set(),  // trial_ids the server holds
    size: 256,            // photo side in pixels (the coordinate frame of x, y)
    mode: null,           // "practice" | "trial"
    items: [],            // practice items or trials
    pos: 0,               // index into items
    marker: null,         // [x, y] photo pixels
    ready: false,         // images of the current item are shown
    locked: false,        // current item confirmed (double Confirm sends once)
    gen: 0,               // bumps on every item change; stale image loads are ignored
    shownAt: 0,
    blurCount: 0,
    focusCount: 0,
    input: null,
    placements: 0,
    dragPointer: null,
    queue: store.get("queue", []),  // clicks waiting for the server
    draining: false,
    retryMs: 0,
    retryAt: 0,
    retryTimer: null,
    lastError: null,
    everStored: false,
    drainWaiters: [],
    preload: [],
    finishing: false,
  };

  // ---------------------------------------------------------------- small UI helpers
  let toastTimer = null;
  function toast(text, ms = 4000) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, ms);
  }

  function showError(title, message, { retry = true, hint } = {}) {
    $("error-title").textContent = title;
    $("error-message").textContent = message;
    if (hint !== undefined) $("error-hint").textContent = hint;
    $("error-retry").hidden = !retry;
    showScreen("screen-error");
  }

  function prettyCategory(c) { return String(c || "object").replace(/[_-]+/g, " "); }

  /** Retry `fn` while it fails transiently, telling the user on the loading screen. */
  async function withRetry(fn, what) {
    let wait = 1000;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        if (!e || !e.isTransient) throw e;
        $("loading-detail").textContent = `${what}: ${e.message} Retrying in ${Math.round(wait / 1000)} s…`;
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(wait * 2, RETRY_MAX_MS);
      }
    }
  }

  // ---------------------------------------------------------------- boot
  async function boot() {
    if (!PID) { showScreen("screen-missing-pid"); return; }
    showScreen("screen-loading");
    try {
      S.study = await withRetry(() => fetchJson("/api/study"), "Loading the study");
    } catch (e) {
      showError("The study could not be loaded", e.message);
      return;
    }
    S.size = Number(S.study.image_size) || 256;
    document.title = S.study.title || document.title;
    if (store.get("consent", false)) {
      await startSession();
    } else {
      showConsent();
    }
  }

  function showConsent() {
    $("study-title").textContent = S.study.title || "";
    setParagraphs($("consent-text"), S.study.consent_text || "");
    showScreen("screen-consent");
    $("consent-yes").focus();
  }

  $("consent-yes").addEventListener("click", () => {
    store.set("consent", true);
    startSession();
  });
  $("consent-no").addEventListener("click", () => {
    showScreen("screen-declined");
  });
  $("declined-restart").addEventListener("click", (ev) => {
    ev.preventDefault();
    showConsent();
  });
  $("error-retry").addEventListener("click", () => { window.location.reload(); });

  // ---------------------------------------------------------------- session
  function applySession(data) {
    S.token = data.session_token;
    S.trials = Array.isArray(data.trials) ? data.trials.slice() : [];
    S.trials.sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
    S.answered = new Set(S.trials.filter((t) => t.answered).map((t) => t.trial_id));
    store.set("token", S.token);
  }

  function queuedIds() { return new Set(S.queue.map((q) => q.trial_id)); }
  function isDone(t, queued) { return S.answered.has(t.trial_id) || (queued || queuedIds()).has(t.trial_id); }
  function doneCount() {
    const q = queuedIds();
    return S.trials.filter((t) => isDone(t, q)).length;
  }
  function firstOpenIndex() {
    const q = queuedIds();
    return S.trials.findIndex((t) => !isDone(t, q));
  }

  async function fetchSession() {
    return fetchJson("/api/sessions", {
      method: "POST",
      body: { prolific_pid: PID, study_id: STUDY_ID, session_id: SESSION_ID, link_key: LINK_KEY },
    });
  }

  async function startSession() {
    showScreen("screen-loading");
    $("loading-detail").textContent = "Preparing your images…";
    let data;
    try {
      data = await withRetry(fetchSession, "Starting your session");
    } catch (e) {
      if (e.status === 410) {
        showError("Your time slot has expired", e.message, { retry: false, hint: "The answers you gave are kept. Please contact the researchers on Prolific." });
      } else if (e.status === 403) {
        showError("This study link is incomplete", e.message, { retry: false, hint: "Please open the study again from its link on Prolific." });
      } else {
        showError("Your session could not be started", e.message);
      }
      return;
    }
    applySession(data);
    if (S.queue.length) drain();
    if (data.status === "expired" && firstOpenIndex() >= 0) {
      const mins = S.study && S.study.lease_minutes ? ` (${Math.round(S.study.lease_minutes)} minutes)` : "";
      showError("Your time slot has expired",
        `The time reserved for your session${mins} has run out, so the remaining images went to other participants.`,
        { retry: false, hint: "The answers you gave are kept. Please return the study on Prolific, or contact the researchers there." });
      return;
    }
    const open = firstOpenIndex();
    if (S.trials.length && open < 0) { finish(); return; }
    const resumed = S.trials.length > 0 && doneCount() > 0;
    if (resumed || store.get("practiceDone", false)) {
      if (resumed) toast(`Welcome back — continuing at image ${open + 1} of ${S.trials.length}.`);
      startTrials();
      return;
    }
    showInstructions();
  }

  // ---------------------------------------------------------------- instructions & practice
  function practiceItems() { return (S.study && Array.isArray(S.study.practice)) ? S.study.practice : []; }

  function showInstructions() {
    setParagraphs($("instructions-text"), S.study.instructions_text || "");
    const n = practiceItems().length;
    $("practice-intro").textContent = n
      ? `First, ${n} practice image${n > 1 ? "s" : ""}: after each one you will see the right answer. Practice answers are not recorded.`
      : "";
    $("instructions-next").textContent = n ? "Start the practice" : "Start";
    showScreen("screen-instructions");
    $("instructions-next").focus();
  }

  $("instructions-next").addEventListener("click", () => {
    if (practiceItems().length) {
      S.mode = "practice";
      S.items = practiceItems();
      enterTrialScreen();
      showItem(0);
    } else {
      store.set("practiceDone", true);
      startTrials();
    }
  });

  function showReady() {
    store.set("practiceDone", true);
    $("ready-total").textContent = String(S.trials.length);
    showScreen("screen-ready");
    $("ready-next").focus();
  }
  $("ready-next").addEventListener("click", () => startTrials());

  $("practice-next").addEventListener("click", () => practiceNext());
  function practiceNext() {
    if (S.mode !== "practice" || !S.locked) return;
    if (S.pos + 1 < S.items.length) showItem(S.pos + 1);
    else showReady();
  }

  function showPracticeFeedback() {
    const item = S.items[S.pos];
    const ans = Array.isArray(item.answer) ? item.answer : null;
    const fb = $("feedback");
    fb.hidden = false;
    const d = ans ? Math.hypot(S.marker[0] - ans[0], S.marker[1] - ans[1]) : NaN;
    const tol = Number(item.tolerance_px) || 25.6;
    if (ans) {
      const g = $("answer");
      g.setAttribute("transform", `translate(${ans[0]} ${ans[1]})`);
      g.setAttribute("visibility", "visible");
    }
    fb.dataset.result = !ans ? "none" : d <= tol ? "good" : "miss";
    if (!ans) {
      fb.className = "feedback good";
      fb.textContent = "Thank you. This practice image has no reference answer to compare with; " +
        "in the study, click the same part of the object as precisely as you can.";
    } else if (d <= tol) {
      fb.className = "feedback good";
      fb.textContent = `Well done! Your click is ${d.toFixed(0)} px from the matching point (green circle with a tick).`;
    } else {
      fb.className = "feedback miss";
      fb.textContent = `Not quite: the matching point is the green circle with a tick, ${d.toFixed(0)} px from your click. ` +
        "Look at which part of the object the ring marks on the sketch, and click that same part on the photo.";
    }
    $("confirm").hidden = true;
    $("keys-help").hidden = true;
    const next = $("practice-next");
    next.hidden = false;
    next.textContent = S.pos + 1 < S.items.length ? "Next practice image" : "Finish the practice";
    next.focus();
  }

  // ---------------------------------------------------------------- trials
  function startTrials() {
    S.mode = "trial";
    S.items = S.trials;
    const open = firstOpenIndex();
    if (open < 0) { finish(); return; }
    enterTrialScreen();
    showItem(open);
  }

  let historyTrapped = false;
  function enterTrialScreen() {
    showScreen("screen-trial");
    // One extra history entry: Back then lands on it and we stay on the current image
    // (a confirmed answer can never be re-sent or changed by navigating).
    if (!historyTrapped) {
      history.pushState({ psc6k: "trial" }, "", window.location.href);
      historyTrapped = true;
    }
  }

  window.addEventListener("popstate", () => {
    if (!historyTrapped) return;
    history.pushState({ psc6k: "trial" }, "", window.location.href);
    if (document.body.dataset.screen === "trial") {
      toast("Confirmed answers are saved and cannot be changed — you are still on the current image.");
    }
  });
  // Restored from the back/forward cache: state may be stale; the server knows the truth.
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) window.location.reload(); });

  function setProgress() {
    const bar = $("progress-bar");
    let text, done, total;
    if (S.mode === "practice") {
      total = S.items.length;
      done = S.pos;
      text = `${S.pos + 1} / ${total}`;
    } else {
      total = S.trials.length;
      done = doneCount();
      text = `${Math.min(S.pos + 1, total)} / ${total}`;
    }
    $("progress-text").textContent = text;
    bar.setAttribute("aria-valuemax", String(total));
    bar.setAttribute("aria-valuenow", String(done));
    bar.setAttribute("aria-valuetext", `${done} of ${total} done`);
    bar.firstElementChild.style.width = total ? `${(100 * done) / total}%` : "0";
  }

  function loadImage(img, url, gen) {
    return new Promise((resolve) => {
      let wait = 1000;
      const attempt = () => {
        if (gen !== S.gen) return;
        img.onload = () => { if (gen === S.gen) resolve(); };
        img.onerror = () => {
          if (gen !== S.gen) return;
          $("photo-loading").textContent = "The images could not be loaded — retrying…";
          setTimeout(() => { img.removeAttribute("src"); attempt(); }, wait);
          wait = Math.min(wait * 2, RETRY_MAX_MS);
        };
        img.src = url;
      };
      attempt();
    });
  }

  function preloadAfter(pos) {
    S.preload = [];
    for (let k = pos + 1; k <= pos + 2 && k < S.items.length; k++) {
      [S.items[k].sketch_url, S.items[k].photo_url].forEach((u) => {
        if (!u) return;
        const im = new Image();
        im.src = u;
        S.preload.push(im);  // keep a reference so the request is not dropped
      });
    }
  }

  async function showItem(pos) {
    const gen = ++S.gen;
    S.pos = pos;
    S.marker = null;
    S.ready = false;
    S.locked = false;
    S.placements = 0;
    S.input = null;
    S.blurCount = 0;
    S.focusCount = 0;
    const item = S.items[pos];
    const practice = S.mode === "practice";
    const screen = $("screen-trial");
    screen.dataset.mode = S.mode;
    screen.dataset.pos = String(pos);
    screen.dataset.trialId = practice ? "" : String(item.trial_id);
    screen.dataset.ready = "false";
    $("trial-title").textContent = practice ? "Practice" : (S.study.title || "Study");
    $("practice-badge").hidden = !practice;
    $("marker").setAttribute("visibility", "hidden");
    $("answer").setAttribute("visibility", "hidden");
    $("feedback").hidden = true;
    $("practice-next").hidden = true;
    $("keys-help").hidden = false;
    const confirm = $("confirm");
    confirm.hidden = false;
    confirm.disabled = true;
    const kp = item.sketch_keypoint || [S.size / 2, S.size / 2];
    $("cue").setAttribute("transform", `translate(${kp[0]} ${kp[1]})`);
    const noun = prettyCategory(item.category);
    $("sketch-img").alt = practice
      ? "Practice sketch; a black and white ring marks the point to find"
      : `Sketch of a ${noun}; a black and white ring marks the point to find`;
    $("photo-img").alt = practice ? "Practice photo: click the matching point" : `Photo of a ${noun}: click the matching point`;
    const loading = $("photo-loading");
    loading.textContent = "Loading images…";
    loading.hidden = false;
    setProgress();
    updateSaveStatus();
    await Promise.all([
      loadImage($("sketch-img"), item.sketch_url, gen),
      loadImage($("photo-img"), item.photo_url, gen),
    ]);
    if (gen !== S.gen) return;
    loading.hidden = true;
    S.ready = true;
    screen.dataset.ready = "true";
    S.shownAt = performance.now();
    preloadAfter(pos);
    const pb = $("photo-box");
    if (document.activeElement !== pb) pb.focus({ preventScroll: true });
  }

  // ---------------------------------------------------------------- marker placement
  function clampPx(v) { return Math.min(S.size - 0.5, Math.max(-0.5, v)); }

  /** Map a pointer event to photo pixels through the image's current on-screen box. */
  function eventToPhotoPx(ev) {
    const rect = $("photo-img").getBoundingClientRect();
    const x = ((ev.clientX - rect.left) / rect.width) * S.size - 0.5;
    const y = ((ev.clientY - rect.top) / rect.height) * S.size - 0.5;
    return [clampPx(x), clampPx(y)];
  }

  function setMarker(xy) {
    S.marker = [Math.round(xy[0] * 1000) / 1000, Math.round(xy[1] * 1000) / 1000];
    const m = $("marker");
    m.setAttribute("transform", `translate(${S.marker[0]} ${S.marker[1]})`);
    m.setAttribute("visibility", "visible");
    $("confirm").disabled = false;
    const box = $("photo-box");
    box.dataset.x = String(S.marker[0]);
    box.dataset.y = String(S.marker[1]);
  }

  const photoBox = $("photo-box");
  photoBox.addEventListener("pointerdown", (ev) => {
    if (!S.ready || S.locked) return;
    if (ev.pointerType === "mouse" && ev.button !== 0) return;
    ev.preventDefault();
    photoBox.focus({ preventScroll: true });
    S.dragPointer = ev.pointerId;
    try { photoBox.setPointerCapture(ev.pointerId); } catch (e) { /* not capturable: fine */ }
    S.input = ev.pointerType || "mouse";
    S.placements += 1;
    setMarker(eventToPhotoPx(ev));
  });
  photoBox.addEventListener("pointermove", (ev) => {
    if (S.dragPointer !== ev.pointerId || !S.ready || S.locked) return;
    setMarker(eventToPhotoPx(ev));
  });
  const endDrag = (ev) => {
    if (S.dragPointer !== ev.pointerId) return;
    S.dragPointer = null;
    if (ev.type === "pointerup" && S.ready && !S.locked) setMarker(eventToPhotoPx(ev));
  };
  photoBox.addEventListener("pointerup", endDrag);
  photoBox.addEventListener("pointercancel", endDrag);
  photoBox.addEventListener("contextmenu", (ev) => ev.preventDefault());

  document.addEventListener("keydown", (ev) => {
    if (document.body.dataset.screen !== "trial") return;
    const tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[ev.key]) {
      ev.preventDefault();
      if (!S.ready || S.locked) return;
      const step = ev.shiftKey ? 8 : 1;
      const cur = S.marker || [(S.size - 1) / 2, (S.size - 1) / 2];
      const d = S.marker ? arrows[ev.key] : [0, 0];
      S.input = "keyboard";
      S.placements += S.marker ? 0 : 1;
      setMarker([clampPx(cur[0] + d[0] * step), clampPx(cur[1] + d[1] * step)]);
      return;
    }
    if (ev.key === "Enter" || ev.key === " " || ev.key === "Spacebar") {
      // Handled here for the whole screen; the default (a second click on a focused button)
      // is suppressed so that one key press is one action.
      ev.preventDefault();
      if (ev.repeat) return;
      if (S.mode === "practice" && S.locked) practiceNext();
      else confirmCurrent();
    }
  });
  $("confirm").addEventListener("click", () => confirmCurrent());

  window.addEventListener("blur", () => { S.blurCount += 1; });
  window.addEventListener("focus", () => { S.focusCount += 1; });

  function displayInfo() {
    const img = $("photo-img");
    const rect = img.getBoundingClientRect();
    return {
      displayed_width: Math.round(rect.width * 100) / 100,
      displayed_height: Math.round(rect.height * 100) / 100,
      natural_width: img.naturalWidth,
      natural_height: img.naturalHeight,
      device_pixel_ratio: window.devicePixelRatio || 1,
      viewport_width: window.innerWidth,
      viewport_height: window.innerHeight,
      blur_count: S.blurCount,
      focus_count: S.focusCount,
      input: S.input || "mouse",
      placements: S.placements,
    };
  }

  function confirmCurrent() {
    if (!S.ready || !S.marker || S.locked) return;
    S.locked = true;
    $("confirm").disabled = true;
    const rt = Math.max(0, Math.round(performance.now() - S.shownAt));
    if (S.mode === "practice") { showPracticeFeedback(); return; }
    const trial = S.items[S.pos];
    enqueue({
      client_id: uuid4(),
      token: S.token,
      trial_id: trial.trial_id,
      x: S.marker[0],
      y: S.marker[1],
      rt_ms: rt,
      display: displayInfo(),
    });
    const next = firstOpenIndex();
    if (next < 0) finish();
    else showItem(next);
  }

  // ---------------------------------------------------------------- the save queue
  function persistQueue() {
    if (!store.set("queue", S.queue)) {
      S.lastError = "Your browser does not let this page store data; keep this tab open until every answer is saved.";
    }
  }

  function enqueue(item) {
    if (S.queue.some((q) => q.trial_id === item.trial_id)) return;  // already waiting: send once
    S.queue.push(item);
    persistQueue();  // durable in the browser before the first network attempt
    updateSaveStatus();
    drain();
  }

  function removeFromQueue(item) {
    S.queue = S.queue.filter((q) => q.client_id !== item.client_id);
    persistQueue();
  }

  function scheduleRetry() {
    S.retryMs = Math.min(Math.max(1000, S.retryMs * 2), RETRY_MAX_MS);
    S.retryAt = Date.now() + S.retryMs;
    clearTimeout(S.retryTimer);
    S.retryTimer = setTimeout(drain, S.retryMs);
  }

  async function drain() {
    if (S.draining || !S.token) return;
    S.draining = true;
    clearTimeout(S.retryTimer);
    S.retryTimer = null;
    updateSaveStatus();
    try {
      while (S.queue.length) {
        const item = S.queue[0];
        const body = {
          trial_id: item.trial_id, x: item.x, y: item.y, rt_ms: item.rt_ms,
          client_id: item.client_id, display: item.display,
        };
        try {
          await fetchJson(`/api/sessions/${encodeURIComponent(item.token || S.token)}/clicks`, { method: "POST", body });
          stored(item);
        } catch (e) {
          if (e.status === 409) { stored(item); continue; }  // this trial is already stored
          if (e.isTransient) {
            S.lastError = e.message;
            scheduleRetry();
            return;
          }
          if (e.status === 410) {
            removeFromQueue(item);
            showError("Your time slot has expired", e.message, { retry: false, hint: "The answers you gave before are kept. Please contact the researchers on Prolific." });
            return;
          }
          // Refused for good (bad request): the trial is not stored, so it stays open and
          // the participant is asked for it again; say so instead of dropping it silently.
          removeFromQueue(item);
          S.answered.delete(item.trial_id);
          S.lastError = `An answer was refused by the server (${e.message}); you will be asked for it again.`;
          toast(S.lastError, 8000);
        }
      }
      S.retryMs = 0;
      S.lastError = null;
    } finally {
      S.draining = false;
      updateSaveStatus();
      if (!S.queue.length) {
        const waiters = S.drainWaiters.splice(0);
        waiters.forEach((w) => w());
      }
    }
  }

  function stored(item) {
    S.answered.add(item.trial_id);
    S.everStored = true;
    removeFromQueue(item);
    S.retryMs = 0;
    if (S.mode === "trial") setProgress();
  }

  function waitForEmptyQueue() {
    if (!S.queue.length) return Promise.resolve();
    return new Promise((resolve) => { S.drainWaiters.push(resolve); drain(); });
  }

  window.addEventListener("online", () => { if (S.queue.length) drain(); });

  function saveStatusText() {
    const n = S.queue.length;
    if (n && S.retryTimer) {
      const s = Math.max(0, Math.ceil((S.retryAt - Date.now()) / 1000));
      return { cls: "warn", text: `⚠ Connection problem — ${n} answer${n > 1 ? "s" : ""} waiting, kept safely in this browser. Retrying in ${s} s. You can carry on.` };
    }
    if (n) return { cls: "", text: `Saving ${n} answer${n > 1 ? "s" : ""}…` };
    if (S.lastError) return { cls: "bad", text: S.lastError };
    if (S.everStored) return { cls: "ok", text: "✓ All answers saved" };
    return { cls: "", text: "" };
  }

  function updateSaveStatus() {
    const { cls, text } = saveStatusText();
    ["save-status", "finishing-status"].forEach((id) => {
      const el = $(id);
      el.className = `save-status ${cls}`;
      el.textContent = text;
      el.dataset.pending = String(S.queue.length);
    });
  }
  setInterval(() => { if (S.retryTimer) updateSaveStatus(); }, 1000);

  window.addEventListener("beforeunload", (ev) => {
    if (S.queue.length) {
      ev.preventDefault();
      ev.returnValue = "Some answers are still being saved.";
    }
  });

  // ---------------------------------------------------------------- completion
  async function finish() {
    if (S.finishing) return;
    S.finishing = true;
    showScreen("screen-finishing");
    updateSaveStatus();
    let wait = 1000;
    try {
      for (;;) {
        await waitForEmptyQueue();
        try {
          const res = await fetchJson(`/api/sessions/${encodeURIComponent(S.token)}/complete`, { method: "POST", body: {} });
          showComplete(res);
          return;
        } catch (e) {
          if (e.status === 409) {
            // The server lacks some trials (e.g. an answer was refused): ask for them again.
            const data = await withRetry(fetchSession, "Checking your answers");
            applySession(data);
            if (firstOpenIndex() >= 0) {
              toast("Some answers did not reach the server — please answer these images again.", 8000);
              startTrials();
              return;
            }
          } else if (e.status === 410) {
            showError("Your time slot has expired", e.message, { retry: false });
            return;
          } else if (!e.isTransient) {
            showError("The study could not be completed", e.message);
            return;
          }
          $("finishing-status").textContent = `${e.message} Trying again in ${Math.round(wait / 1000)} s…`;
          await new Promise((r) => setTimeout(r, wait));
          wait = Math.min(wait * 2, RETRY_MAX_MS);
        }
      }
    } finally {
      S.finishing = false;
    }
  }

  function redirectTarget(url, code) {
    if (!url) return null;
    if (code && url.indexOf(code) < 0) {
      try {
        const u = new URL(url, window.location.href);
        u.searchParams.set("cc", code);
        return u.toString();
      } catch (e) {
        return url + (url.indexOf("?") < 0 ? "?" : "&") + "cc=" + encodeURIComponent(code);
      }
    }
    return url;
  }

  function showComplete(res) {
    const code = res.completion_code || "";
    const target = redirectTarget(res.redirect_url, code);
    $("completion-code").textContent = code;
    const link = $("redirect-link");
    if (target) {
      link.href = target;
      link.hidden = false;
    } else {
      link.hidden = true;
    }
    showScreen("screen-complete");
    historyTrapped = false;
    link.focus();
    if (target) {
      let left = 20;
      const tick = () => {
        if (document.body.dataset.screen !== "complete") return;
        if (left <= 0) { window.location.assign(target); return; }
        $("redirect-countdown").textContent = `(You will be taken there automatically in ${left} s.)`;
        left -= 1;
        setTimeout(tick, 1000);
      };
      tick();
    }
  }

  boot();
})();
