/* PSC6K researcher dashboard: progress, dropout, trial time, and a live view of one pair.
 * The admin token is typed once, kept in sessionStorage (this tab only) and sent as a Bearer
 * header; images of the live view also need it, so they are fetched and shown as blob URLs. */
(function () {
  "use strict";
  const { fetchJson, $, showScreen, svgEl } = PSC6K;
  const TOKEN_KEY = "psc6k:admin-token";
  const REFRESH_MS = 5000;
  let timer = null;
  let busy = false;
  let liveUrls = [];
  let liveKey = null;

  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; } }
  function setToken(t) { try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ } }
  function authHeaders() { return { Authorization: `Bearer ${token()}` }; }

  function api(path) { return fetchJson(path, { headers: authHeaders() }); }

  function showLogin(message) {
    stopTimer();
    showScreen("screen-login");
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("token-input").focus();
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    setToken(t);
    $("token-input").value = "";
    openDashboard();
  });
  $("logout").addEventListener("click", () => { setToken(""); showLogin("Signed out."); });
  $("refresh").addEventListener("click", () => refresh());
  $("auto-refresh").addEventListener("change", () => { if ($("auto-refresh").checked) startTimer(); else stopTimer(); });
  $("live-form").addEventListener("submit", (ev) => { ev.preventDefault(); liveKey = null; refreshLive(); });
  $("export-csv").addEventListener("click", () => downloadClicks());
  $("link-copy").addEventListener("click", () => {
    const input = $("link-url");
    input.select();
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).catch(() => document.execCommand("copy"));
    else document.execCommand("copy");
  });

  function startTimer() { stopTimer(); timer = setInterval(refresh, REFRESH_MS); }
  function stopTimer() { if (timer) clearInterval(timer); timer = null; }

  /** The full study URL: this server's own address + the path with Prolific's placeholders and the key. */
  async function showStudyLink() {
    const link = await api("/api/admin/study");
    $("link-url").value = `${window.location.origin}${link.study_url_path}`;
    $("link-first-click").textContent = String(link.first_click_minutes);
  }

  async function openDashboard() {
    showScreen("screen-dash");
    showStudyLink().catch((e) => handleAuth(e));
    const ok = await refresh();
    if (ok && $("auto-refresh").checked) startTimer();
  }

  function handleAuth(e) {
    if (e && (e.status === 401 || e.status === 403)) {
      setToken("");
      showLogin(`The token was refused (${e.status}): ${e.message}`);
      return true;
    }
    return false;
  }

  async function refresh() {
    if (busy) return false;
    busy = true;
    try {
      const progress = await api("/api/admin/progress");
      $("dash-error").hidden = true;
      renderProgress(progress);
      await refreshLive();
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      return true;
    } catch (e) {
      if (handleAuth(e)) return false;
      const box = $("dash-error");
      box.hidden = false;
      box.textContent = `Could not refresh: ${e.message}`;
      return false;
    } finally {
      busy = false;
    }
  }

  // ------------------------------------------------------------ numbers
  function fmtPct(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const p = v <= 1 ? v * 100 : v;  // accept a fraction or a percentage
    return `${p.toFixed(1)} %`;
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    return ms >= 10000 ? `${(ms / 1000).toFixed(0)} s` : `${(ms / 1000).toFixed(1)} s`;
  }

  function renderProgress(p) {
    const s = p.sessions || {};
    $("c-started").textContent = s.started ?? "–";
    $("c-completed").textContent = s.completed ?? "–";
    $("c-active").textContent = s.active ?? "–";
    $("c-expired").textContent = s.expired ?? "–";
    $("c-dropout").textContent = fmtPct(p.dropout_rate);
    $("c-median").textContent = fmtMs(p.median_trial_ms);
    const sl = p.slots || {};
    $("c-slots").textContent = sl.total ? `${sl.filled} / ${sl.total}` : "–";
    $("c-too-fast").textContent = s.too_fast ?? "–";
    $("c-resume-refused").textContent = s.resume_refused ?? "–";
    if (p.title) $("study-name").textContent = p.title;
    renderCategories(p.per_category || []);
    renderKeypoints(p.clicks_per_keypoint || {});
  }

  function renderCategories(rows) {
    const holder = $("cat-chart");
    holder.textContent = "";
    const filled = rows.reduce((a, r) => a + (r.filled || 0), 0);
    const total = rows.reduce((a, r) => a + (r.total || 0), 0);
    const done = rows.filter((r) => r.total && r.filled >= r.total).length;
    $("cat-summary").textContent = rows.length
      ? `${rows.length} categories · ${done} complete · ${filled} / ${total} slots (${total ? ((100 * filled) / total).toFixed(1) : 0} %)`
      : "No categories yet.";
    const rowH = 18, labelW = 150, barW = 260, numW = 90, W = labelW + barW + numW;
    const H = Math.max(rowH * rows.length + 8, 30);
    const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart" });
    rows.forEach((r, i) => {
      const y = 4 + i * rowH;
      const frac = r.total ? Math.min(1, r.filled / r.total) : 0;
      const g = svgEl("g", { "data-category": r.category }, svg);
      svgEl("title", {}, g).textContent = `${r.category}: ${r.filled} / ${r.total}`;
      const label = svgEl("text", { x: labelW - 6, y: y + 13, "text-anchor": "end", "font-size": 12, fill: "#16181d" }, g);
      label.textContent = r.category;
      svgEl("rect", { x: labelW, y: y + 2, width: barW, height: rowH - 5, fill: "#e3e7ee", stroke: "#9aa1ad", "stroke-width": 0.5 }, g);
      svgEl("rect", { x: labelW, y: y + 2, width: (barW * frac).toFixed(1), height: rowH - 5, fill: frac >= 1 ? "#0d6b2f" : "#0b4fc4" }, g);
      const num = svgEl("text", { x: labelW + barW + 6, y: y + 13, "font-size": 12, fill: "#4a5160" }, g);
      num.textContent = `${r.filled} / ${r.total}`;
    });
    holder.appendChild(svg);
  }

  function renderKeypoints(counts) {
    const holder = $("kp-chart");
    holder.textContent = "";
    const keys = Object.keys(counts).sort((a, b) => Number(a) - Number(b));
    const vals = keys.map((k) => Number(counts[k]) || 0);
    const max = Math.max(1, ...vals);
    const W = 380, H = 150, base = 120, bw = 60, gap = 30, left = 40;
    const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart" });
    svgEl("line", { x1: left - 10, y1: base, x2: W - 10, y2: base, stroke: "#4a5160" }, svg);
    keys.forEach((k, i) => {
      const x = left + i * (bw + gap);
      const h = (100 * vals[i]) / max;
      const g = svgEl("g", { "data-clicks": k }, svg);
      svgEl("title", {}, g).textContent = `${vals[i]} keypoints with ${k} click(s)`;
      svgEl("rect", { x, y: base - h, width: bw, height: h, fill: k === "3" ? "#0d6b2f" : "#0b4fc4" }, g);
      const v = svgEl("text", { x: x + bw / 2, y: base - h - 4, "text-anchor": "middle", "font-size": 12, fill: "#16181d" }, g);
      v.textContent = String(vals[i]);
      const l = svgEl("text", { x: x + bw / 2, y: base + 16, "text-anchor": "middle", "font-size": 12, fill: "#4a5160" }, g);
      l.textContent = `${k} click${k === "1" ? "" : "s"}`;
    });
    holder.appendChild(svg);
  }

  // ------------------------------------------------------------ live pair
  async function blobUrl(url) {
    const res = await fetch(url, { headers: authHeaders(), cache: "no-store" });
    if (!res.ok) throw new Error(`image ${res.status}`);
    return URL.createObjectURL(await res.blob());
  }

  const CLICK_COLOURS = ["#ff1f8e", "#ffd400", "#00c2ff", "#7cff4f", "#ff8a00", "#c77dff"];

  async function refreshLive() {
    const q = $("live-task").value.trim();
    let live;
    try {
      live = await api(`/api/admin/live${q ? `?task_id=${encodeURIComponent(q)}` : ""}`);
    } catch (e) {
      if (handleAuth(e)) throw e;
      $("live-body").innerHTML = "";
      const p = document.createElement("p");
      p.className = e.status === 404 ? "muted" : "notice bad";
      p.textContent = e.status === 404 ? `No pair to show yet (${e.message}).` : `Live view failed: ${e.message}`;
      $("live-body").appendChild(p);
      liveKey = null;
      return;
    }
    if (!live || live.task_id === undefined || live.task_id === null) {
      $("live-body").innerHTML = '<p class="muted">No clicks yet.</p>';
      liveKey = null;
      return;
    }
    const key = JSON.stringify([live.task_id, (live.clicks || []).length, live.centroid]);
    if (key === liveKey) return;  // nothing new: keep the images, no flicker
    liveKey = key;
    let sketchSrc = "", photoSrc = "";
    try {
      [sketchSrc, photoSrc] = await Promise.all([blobUrl(live.sketch_url), blobUrl(live.photo_url)]);
    } catch (e) { /* draw the points without the images */ }
    liveUrls.forEach((u) => URL.revokeObjectURL(u));
    liveUrls = [sketchSrc, photoSrc].filter(Boolean);
    renderLive(live, sketchSrc, photoSrc);
  }

  function renderLive(live, sketchSrc, photoSrc) {
    const body = $("live-body");
    body.textContent = "";
    const pair = document.createElement("div");
    pair.className = "live-pair";
    body.appendChild(pair);

    const panel = (title, src, alt) => {
      const fig = document.createElement("figure");
      fig.className = "panel";
      const cap = document.createElement("figcaption");
      cap.textContent = title;
      fig.appendChild(cap);
      const box = document.createElement("div");
      box.className = "imgbox";
      const img = document.createElement("img");
      img.alt = alt;
      if (src) img.src = src;
      box.appendChild(img);
      const svg = svgEl("svg", { class: "overlay", viewBox: "-0.5 -0.5 256 256", preserveAspectRatio: "none" });
      box.appendChild(svg);
      fig.appendChild(box);
      pair.appendChild(fig);
      return svg;
    };
    const kp = live.sketch_keypoint || [0, 0];
    const sk = panel(`Sketch · keypoint ${live.keypoint}`, sketchSrc, `Sketch ${live.sketch} with keypoint ${live.keypoint} ringed`);
    const cue = svgEl("g", { transform: `translate(${kp[0]} ${kp[1]})` }, sk);
    svgEl("circle", { r: 11, fill: "none", stroke: "#000", "stroke-width": 5 }, cue);
    svgEl("circle", { r: 11, fill: "none", stroke: "#fff", "stroke-width": 2 }, cue);
    svgEl("circle", { r: 2.4, fill: "#ff1f8e", stroke: "#000", "stroke-width": 1 }, cue);

    const clicks = live.clicks || [];
    const ph = panel(`Photo · ${clicks.length} click${clicks.length === 1 ? "" : "s"}`, photoSrc,
      `Photo ${live.photo} with ${clicks.length} clicks and their centroid`);
    if (Array.isArray(live.centroid)) {
      const g = svgEl("g", { transform: `translate(${live.centroid[0]} ${live.centroid[1]})`, class: "centroid" }, ph);
      svgEl("title", {}, g).textContent = `centroid (${live.centroid[0].toFixed(1)}, ${live.centroid[1].toFixed(1)})`;
      svgEl("path", { d: "M-9 -9 L9 9 M-9 9 L9 -9", stroke: "#000", "stroke-width": 4 }, g);
      svgEl("path", { d: "M-9 -9 L9 9 M-9 9 L9 -9", stroke: "#fff", "stroke-width": 1.8 }, g);
    }

    clicks.forEach((c, i) => {
      const g = svgEl("g", { transform: `translate(${c.x} ${c.y})`, class: "click" }, ph);
      svgEl("title", {}, g).textContent = `${c.participant || "?"} · (${Number(c.x).toFixed(1)}, ${Number(c.y).toFixed(1)}) · ${c.created_at || ""}`;
      svgEl("circle", { r: 4.5, fill: CLICK_COLOURS[i % CLICK_COLOURS.length], stroke: "#000", "stroke-width": 1.5 }, g);
    });
    const table = document.createElement("table");
    table.className = "kv";
    const rows = [
      ["task", live.task_id], ["category", live.category], ["photo", live.photo], ["sketch", live.sketch],
      ["keypoint", live.keypoint],
      ["centroid", Array.isArray(live.centroid) ? `(${live.centroid[0].toFixed(1)}, ${live.centroid[1].toFixed(1)})` : "–"],
    ];
    clicks.forEach((c, i) => rows.push([`click ${i + 1}`, `(${Number(c.x).toFixed(1)}, ${Number(c.y).toFixed(1)}) · ${c.participant || "?"}`]));
    rows.forEach(([k, v]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"); a.className = "muted"; a.textContent = k;
      const b = document.createElement("td"); b.textContent = v === undefined || v === null ? "–" : String(v);
      tr.appendChild(a); tr.appendChild(b); table.appendChild(tr);
    });
    pair.appendChild(table);
  }

  async function downloadClicks() {
    try {
      const res = await fetch("/api/admin/clicks?format=csv", { headers: authHeaders(), cache: "no-store" });
      if (res.status === 401 || res.status === 403) { handleAuth({ status: res.status, message: "refused" }); return; }
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = "clicks.csv";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      const box = $("dash-error");
      box.hidden = false;
      box.textContent = `Export failed: ${e.message}`;
    }
  }

  if (token()) openDashboard(); else showLogin("");
})();
