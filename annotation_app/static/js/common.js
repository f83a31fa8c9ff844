/* Helpers shared by the participant page and the dashboard. Plain ES2018, no dependencies. */
"use strict";

const PSC6K = (function () {
  /** A random RFC 4122 v4 id: the idempotency key of one click. */
  function uuid4() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const b = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(b);
    } else {
      for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** An error from the server (status >= 400) or from the network (status 0). */
  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
    get isNetwork() { return this.status === 0; }
    /** Worth retrying later with the same request (network, timeout, overload, server fault). */
    get isTransient() { return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500; }
  }

  /** Human-readable text of a FastAPI-style error body ({detail: str | [{loc, msg}] | {...}}). */
  function detailText(body, fallback) {
    if (!body) return fallback;
    const d = body.detail !== undefined ? body.detail : body.message;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d.map((e) => (e && e.msg ? `${(e.loc || []).join(".")}: ${e.msg}` : JSON.stringify(e))).join("; ");
    }
    if (d && typeof d === "object") return d.message || d.detail || JSON.stringify(d);
    return fallback;
  }

  /**
   * fetch() returning parsed JSON, throwing ApiError. A request that takes longer than
   * `timeoutMs` is aborted and reported as a network error, so a hung connection never blocks
   * the save queue.
   */
  async function fetchJson(url, { method = "GET", body, headers = {}, timeoutMs = 15000 } = {}) {
    const ctrl = typeof AbortController === "function" ? new AbortController() : null;
    const timer = ctrl ? setTimeout(() => ctrl.abort(), timeoutMs) : null;
    const init = { method, headers: Object.assign({ Accept: "application/json" }, headers), cache: "no-store" };
    if (ctrl) init.signal = ctrl.signal;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, navigator.onLine === false ? "You are offline." : "Could not reach the server.", null);
    } finally {
      if (timer) clearTimeout(timer);
    }
    let data = null;
    const text = await res.text().catch(() => "");
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { detail: text.slice(0, 300) }; }
    }
    if (!res.ok) {
      throw new ApiError(res.status, detailText(data, `The server answered ${res.status} ${res.statusText}.`), data);
    }
    return data;
  }

  function $(id) { return document.getElementById(id); }

  /** Show one `.screen` element and hide the others. */
  function showScreen(id) {
    document.querySelectorAll(".screen").forEach((s) => { s.hidden = s.id !== id; });
    const shown = $(id);
    document.body.dataset.screen = id.replace(/^screen-/, "");
    return shown;
  }

  /** Put plain text into an element as paragraphs (never as HTML: config text is not trusted). */
  function setParagraphs(el, text) {
    el.textContent = "";
    String(text || "").split(/\n\s*\n/).forEach((chunk) => {
      if (!chunk.trim()) return;
      const p = document.createElement("p");
      p.textContent = chunk.trim();
      el.appendChild(p);
    });
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs, parent) {
    const e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach((k) => e.setAttribute(k, attrs[k]));
    if (parent) parent.appendChild(e);
    return e;
  }

  return { uuid4, ApiError, detailText, fetchJson, $, showScreen, setParagraphs, svgEl, SVG_NS };
})();
