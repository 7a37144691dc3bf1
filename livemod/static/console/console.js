// livemod moderator console: plain DOM, no framework, no markup parsed from strings.
//
// Every string from the daemon (ids, URLs, transcripts, OCR text, notes) is
// attacker-controlled in the end, so the DOM is built with createElement and
// textContent only; pictures and sounds are fetched with the token and shown as
// blob: URLs. Everything comes from the public API and the event WebSocket.
"use strict";

(() => {
  const STORE_TOKEN = "livemod.token";
  const STORE_NAME = "livemod.moderator";
  const FEED_MAX = 200;
  const REPLAY = 300; // events replayed at start, so the feed is not empty
  const ID_RULE = /^[A-Za-z0-9_.@-]{1,128}$/;

  const state = {
    token: sessionStorage.getItem(STORE_TOKEN) || "",
    moderator: sessionStorage.getItem(STORE_NAME) || "",
    lastSeq: null,
    ws: null,
    backoff: 500,
    streams: new Map(),
    feed: [],
    escalations: new Map(), // action seq -> escalation event (the LLM verdict)
    reviews: [],
    reviewIndex: -1,
    selected: null, // {kind: "stream" | "action" | "review", id}
    images: new Map(), // evidence id -> Promise<HTMLImageElement | null>
    timers: [],
    pending: new Map(),
    streamTicket: 0, // the latest GET /v1/streams asked for
    reviewTicket: 0,
  };

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers: text only ---------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === "class") node.className = value;
        else if (key === "data") Object.assign(node.dataset, value);
        else if (key === "on") {
          for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
        } else if (["title", "type", "disabled", "value", "placeholder", "hidden",
          "tabIndex", "controls", "maxLength"].includes(key)) node[key] = value;
        else throw new Error("el: unsupported property " + key);
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmtTime(ts) {
    if (typeof ts !== "number") return "";
    return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
  }

  function num(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || "") }, text);
  }

  const SEVERITY = new Set(["none", "low", "medium", "high", "critical"]);
  const ACTIONS = new Set(["warn", "review", "blur", "mute", "pause", "end"]);

  function sevBadge(sev) {
    return badge(sev, SEVERITY.has(sev) ? "sev-" + sev : "");
  }

  function actionBadge(action, st) {
    const kind = ACTIONS.has(action) ? "act-" + action : "";
    return badge(String(action) + (st ? " " + st : ""), kind + (st === "stop" ? " stopped" : ""));
  }

  // -- the API --------------------------------------------------------------------

  class AuthError extends Error {}

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (state.token) opts.headers.Authorization = "Bearer " + state.token;
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const resp = await fetch(path, opts);
    if (resp.status === 401) {
      signOut("The token was refused: sign in again.");
      throw new AuthError("401");
    }
    return resp;
  }

  async function apiJson(path, options) {
    const resp = await api(path, options);
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const message = body && typeof body.error === "string" ? body.error : "HTTP " + resp.status;
      throw new Error(message);
    }
    return body;
  }

  function evidenceImage(eid) {
    if (!state.images.has(eid)) {
      const loading = (async () => {
        const resp = await api("/v1/evidence/" + encodeURIComponent(eid) + "/image");
        if (!resp.ok) return null;
        const url = URL.createObjectURL(await resp.blob());
        const img = new Image();
        img.src = url;
        await img.decode();
        return img;
      })().catch(() => null);
      state.images.set(eid, loading);
      if (state.images.size > 400) state.images.delete(state.images.keys().next().value);
    }
    return state.images.get(eid);
  }

  // A picture with the action's regions drawn on it (source pixels).
  function evidenceCanvas(eid, regions, cls) {
    const canvas = el("canvas", { class: cls || "evidence", data: { evidence: eid } });
    canvas.width = 320;
    canvas.height = 180;
    evidenceImage(eid).then((img) => {
      if (!img) {
        canvas.dataset.missing = "1";
        return;
      }
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      ctx.lineWidth = Math.max(2, img.naturalWidth / 200);
      ctx.strokeStyle = "#ff3b30";
      ctx.fillStyle = "#ff3b30";
      ctx.font = Math.max(12, img.naturalWidth / 40) + "px sans-serif";
      for (const r of Array.isArray(regions) ? regions : []) {
        ctx.strokeRect(r.x, r.y, r.w, r.h);
        if (r.label) ctx.fillText(String(r.label), r.x + 3, Math.max(12, r.y - 4));
      }
      canvas.dataset.loaded = String(Date.now());
    });
    return canvas;
  }

  // -- sign-in ---------------------------------------------------------------------

  function showLogin(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-name").value = state.moderator;
    $("login-token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORE_TOKEN);
    state.token = "";
    stop();
    showLogin(message);
  }

  async function submitLogin(event) {
    event.preventDefault();
    const token = $("login-token").value.trim();
    const name = $("login-name").value.trim();
    if (!ID_RULE.test(name)) {
      $("login-error").textContent = "Your name: 1-128 letters, digits, '_', '.', '@' or '-'.";
      return;
    }
    const resp = await fetch("/v1/streams", {
      headers: token ? { Authorization: "Bearer " + token } : {},
    });
    if (resp.status === 401) {
      $("login-error").textContent = "That token was refused.";
      return;
    }
    state.token = token;
    state.moderator = name;
    sessionStorage.setItem(STORE_TOKEN, token);
    sessionStorage.setItem(STORE_NAME, name);
    $("login-token").value = "";
    start();
  }

  // -- the running console -------------------------------------------------------

  async function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("whoami").textContent = state.moderator;
    let health = {};
    try {
      health = await (await fetch("/healthz")).json();
    } catch (_) {
      health = {};
    }
    state.wsPort = health.websocket_port;
    if (state.lastSeq === null) {
      state.lastSeq = typeof health.last_seq === "number" ? Math.max(0, health.last_seq - REPLAY) : 0;
    }
    connect();
    refreshStreams();
    refreshReviews();
    state.timers.push(setInterval(refreshStreams, 2000));
    state.timers.push(setInterval(refreshReviews, 5000));
  }

  function stop() {
    state.timers.forEach(clearInterval);
    state.timers = [];
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.close();
    }
  }

  function setConn(text, kind) {
    const pill = $("conn");
    pill.textContent = text;
    pill.className = "pill " + (kind || "");
  }

  function connect() {
    const params = new URLSearchParams();
    params.set("since", String(state.lastSeq || 0));
    if (state.token) params.set("token", state.token);
    const host = location.hostname.includes(":") ? "[" + location.hostname + "]" : location.hostname;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + host + ":" + state.wsPort + "/v1/events?" + params);
    state.ws = ws;
    ws.onopen = () => {
      state.backoff = 500;
      setConn("live", "ok");
    };
    ws.onmessage = (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      if (typeof event.seq === "number") {
        if (state.lastSeq !== null && event.seq <= state.lastSeq) return;
        state.lastSeq = event.seq;
      }
      onEvent(event);
      $("conn").title = "last event seq " + state.lastSeq;
    };
    ws.onclose = () => {
      if (state.ws !== ws) return; // signed out
      setConn("reconnecting", "warn");
      // Resume from the last seq seen: the store replays what was missed.
      setTimeout(() => {
        if (state.ws === ws) connect();
      }, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 5000);
    };
  }

  function later(name, fn, ms) {
    if (state.pending.has(name)) return;
    state.pending.set(name, setTimeout(() => {
      state.pending.delete(name);
      fn();
    }, ms));
  }

  function onEvent(event) {
    switch (event.type) {
      case "action":
        addAction(event);
        later("streams", refreshStreams, 100);
        break;
      case "session":
        later("streams", refreshStreams, 100);
        break;
      case "review":
        later("reviews", refreshReviews, 50);
        break;
      case "escalation":
        if (typeof event.action_seq === "number") state.escalations.set(event.action_seq, event);
        break;
      default:
        break;
    }
    const sel = state.selected;
    if (sel && sel.kind === "stream" && event.stream_id === sel.id) {
      later("timeline", () => refreshStream(sel.id), 200);
    }
  }

  // -- filters -------------------------------------------------------------------

  function matches(item) {
    const room = $("filter-room").value.trim();
    const user = $("filter-user").value.trim();
    return (!room || String(item.room_id).includes(room)) &&
      (!user || String(item.user_id).includes(user));
  }

  function applyFilters() {
    renderStreams();
    renderReviews();
    for (const row of $("feed").children) {
      row.hidden = !matches({ room_id: row.dataset.room, user_id: row.dataset.user });
    }
  }

  // -- streams -------------------------------------------------------------------

  async function refreshStreams() {
    // Polls and event-driven reads overlap: only the latest request's answer counts,
    // so an older answer that arrives last cannot undo what an event just changed.
    const ticket = ++state.streamTicket;
    try {
      const body = await apiJson("/v1/streams");
      if (ticket !== state.streamTicket) return;
      state.streams = new Map(body.streams.map((s) => [s.id, s]));
      renderStreams();
    } catch (err) {
      if (!(err instanceof AuthError)) setConn("API: " + err.message, "warn");
    }
  }

  function standingText(list) {
    if (!Array.isArray(list) || list.length === 0) return "–";
    return list.map((a) => a.action + " (" + a.category + ")").join(", ");
  }

  function renderStreams() {
    const body = $("streams");
    clear(body);
    const shown = [...state.streams.values()].filter(matches);
    for (const s of shown) {
      const standing = Array.isArray(s.standing_actions) ? s.standing_actions : [];
      const row = el("tr", {
        class: "clickable" + (state.selected && state.selected.id === s.id ? " selected" : ""),
        data: { stream: s.id },
        tabIndex: 0,
        on: { click: () => showStream(s.id), keydown: (e) => e.key === "Enter" && showStream(s.id) },
      },
      el("td", null, s.user_id),
      el("td", null, s.room_id),
      el("td", { title: s.url }, s.source),
      el("td", { class: "num" }, num(s.risk_score, 2)),
      el("td", null, sevBadge(s.severity)),
      el("td", { class: "standing" }, standing.length
        ? standing.map((a) => actionBadge(a.action, a.category)) : "–"),
      el("td", { class: "num" }, String(s.drops) + " / " + num(s.lag_s, 2) + " s"));
      body.append(row);
    }
    $("stream-count").textContent = String(shown.length);
    $("streams-empty").hidden = shown.length > 0;
  }

  // Re-render a stream's panel for new events, but not under the moderator's typing.
  function refreshStream(id) {
    const focus = document.activeElement;
    if (focus instanceof HTMLInputElement && $("detail").contains(focus)) {
      later("timeline", () => refreshStream(id), 1000);
      return;
    }
    const sel = state.selected;
    if (sel && sel.kind === "stream" && sel.id === id) showStream(id);
  }

  async function showStream(id) {
    state.selected = { kind: "stream", id };
    renderStreams();
    let s;
    try {
      s = await apiJson("/v1/streams/" + encodeURIComponent(id));
    } catch (err) {
      renderDetail(el("p", { class: "error" }, "Stream " + id + ": " + err.message));
      return;
    }
    if (!state.selected || state.selected.id !== id) return;
    const live = s.status === "live" || s.status === "starting";
    const events = state.feed.filter((e) => e.stream_id === id);
    const times = Array.isArray(s.flagged_media_times) ? s.flagged_media_times : [];
    const mediaEnd = Math.max(1, ...times, ...events.map((e) => Number(e.media_time_s) || 0));
    const axis = el("div", { class: "axis", title: "flagged media times" });
    for (const t of times) {
      const mark = el("span", { class: "mark", title: num(t, 1) + " s" });
      mark.style.left = (100 * t / mediaEnd).toFixed(2) + "%";
      axis.append(mark);
    }
    for (const e of events) {
      const mark = el("span", { class: "mark act-" + (ACTIONS.has(e.action) ? e.action : "x"),
        title: e.action + " " + e.state + " at " + num(e.media_time_s, 1) + " s" });
      mark.style.left = (100 * (Number(e.media_time_s) || 0) / mediaEnd).toFixed(2) + "%";
      axis.append(mark);
    }
    const actions = Array.isArray(s.actions) ? s.actions : [];
    const timeline = el("ol", { class: "list timeline" }, actions.map((a) => {
      const full = state.feed.find((e) => e.seq === a.seq);
      return el("li", { class: full ? "clickable" : "", data: { seq: String(a.seq) },
        on: { click: () => full && showAction(full) } },
        el("span", { class: "mono" }, num(a.media_time_s, 1) + " s"), " ",
        actionBadge(a.action, a.state), " ", a.category || "",
        full && Array.isArray(full.sources) ? el("span", { class: "muted" }, " · " + full.sources.join(", ")) : "",
        el("span", { class: "muted" }, " · " + num(a.latency_ms, 0) + " ms"));
    }));
    const controls = el("div", { class: "buttons" });
    const byHand = [];
    if (live) {
      controls.append(el("button", { type: "button", class: "danger", data: { op: "stop" },
        on: { click: () => stopStream(id) } }, "Stop moderation"));
      byHand.push(manualControls(id));
    }
    renderDetail(
      el("h2", null, "Stream ", el("span", { class: "mono" }, id)),
      el("dl", { class: "facts" },
        el("dt", null, "user"), el("dd", null, s.user_id),
        el("dt", null, "room"), el("dd", null, s.room_id),
        el("dt", null, "source"), el("dd", null, String(s.source || "") + " · " + String(s.url || "")),
        el("dt", null, "status"), el("dd", null, s.status),
        el("dt", null, "risk"), el("dd", null, num(s.risk_score, 2), " ", s.severity ? sevBadge(s.severity) : ""),
        el("dt", null, "standing"), el("dd", { data: { field: "standing" } }, standingText(s.standing_actions)),
        el("dt", null, "samples"), el("dd", null, String(s.samples ?? "–") + " (drops " + String(s.drops ?? "–") + ", lag " + num(s.lag_s, 2) + " s)"),
        s.metadata && Object.keys(s.metadata).length
          ? [el("dt", null, "metadata"), el("dd", { class: "mono" }, JSON.stringify(s.metadata))] : ""),
      controls,
      byHand,
      el("h3", null, "Timeline (media seconds, 0 – " + num(mediaEnd, 1) + ")"),
      axis,
      actions.length ? timeline : el("p", { class: "muted" }, "No action on this stream."));
  }

  // Actions a moderator started by hand on a stream and nobody lifted yet, from events.
  function manualStanding(id) {
    const standing = new Map();
    for (const e of [...state.feed].reverse()) {
      if (e.stream_id !== id || e.origin !== "moderator") continue;
      const k = e.category + "\u0000" + e.action;
      if (e.state === "start") standing.set(k, e);
      else standing.delete(k);
    }
    return [...standing.values()];
  }

  function manualControls(id) {
    const category = el("input", { type: "text", value: "manual", maxLength: 128,
      title: "category: a policy category, or manual" });
    category.className = "category";
    const note = el("input", { type: "text", placeholder: "why (kept in the event)", maxLength: 2000 });
    note.className = "why";
    const act = (action, st, cat) => manualAction(id, action, st, cat, note.value);
    const lifts = manualStanding(id).map((e) => el("button", { type: "button",
      data: { op: "lift-" + e.action }, on: { click: () => act(e.action, "stop", e.category) } },
      "Lift " + e.action + " (" + e.category + ")"));
    return el("div", { class: "by-hand" },
      el("h3", null, "Act by hand"),
      el("div", { class: "buttons" },
        category, note,
        el("button", { type: "button", class: "danger", data: { op: "pause" },
          on: { click: () => act("pause", "start", category.value.trim()) } }, "Pause stream"),
        el("button", { type: "button", class: "danger", data: { op: "end" },
          on: { click: () => act("end", "start", category.value.trim()) } }, "End stream"),
        lifts));
  }

  async function manualAction(id, action, st, category, note) {
    if (st === "start" && !window.confirm(action + " this stream by hand?")) return;
    try {
      await apiJson("/v1/streams/" + encodeURIComponent(id) + "/actions", { method: "POST",
        json: { action, state: st, category, moderator_id: state.moderator, note: note || "" } });
      flash(st === "start" ? action + " started by hand." : action + " lifted.");
    } catch (err) {
      flash("Could not " + action + ": " + err.message, true);
    }
  }

  async function stopStream(id) {
    if (!window.confirm("Stop moderating this stream? Its actions end with it.")) return;
    try {
      await apiJson("/v1/streams/" + encodeURIComponent(id), { method: "DELETE" });
      flash("Moderation stopped.");
    } catch (err) {
      flash("Could not stop: " + err.message, true);
    }
    refreshStreams();
    showStream(id);
  }

  // -- the live action feed ----------------------------------------------------

  function addAction(event) {
    state.feed.unshift(event);
    if (state.feed.length > FEED_MAX) state.feed.pop();
    const feed = $("feed");
    const evidence = event.evidence_id && event.state === "start"
      ? evidenceCanvas(event.evidence_id, event.regions, "thumb") : null;
    const row = el("li", {
      class: "action clickable",
      data: { seq: String(event.seq), stream: event.stream_id, room: event.room_id,
        user: event.user_id, action: event.action, state: event.state,
        shown: String(Date.now()) },
      tabIndex: 0,
      on: { click: () => showAction(event), keydown: (e) => e.key === "Enter" && showAction(event) },
    },
    evidence,
    el("div", { class: "what" },
      el("div", null, actionBadge(event.action, event.state), " ",
        el("strong", null, event.category), " ",
        el("span", { class: "muted" }, num(event.confidence, 2) + " · " + event.tier)),
      el("div", null, el("span", { class: "who" }, event.user_id), " @ ",
        el("span", { class: "who" }, event.room_id)),
      el("div", { class: "muted small" }, fmtTime(event.ts) + " · media " + num(event.media_time_s, 1) +
        " s · " + num(event.latency_ms, 0) + " ms · " +
        (Array.isArray(event.sources) ? event.sources.join(", ") : "") +
        (event.origin ? " · by " + event.origin : "") +
        (event.moderator_id ? " (" + event.moderator_id + ")" : ""))));
    row.hidden = !matches(event);
    feed.prepend(row);
    while (feed.children.length > FEED_MAX) feed.lastChild.remove();
    $("feed-empty").hidden = true;
  }

  async function showAction(event) {
    state.selected = { kind: "action", id: event.seq };
    const parts = [
      el("h2", null, actionBadge(event.action, event.state), " ", event.category),
      el("dl", { class: "facts" },
        el("dt", null, "user @ room"), el("dd", null, event.user_id + " @ " + event.room_id),
        el("dt", null, "stream"), el("dd", { class: "mono" }, event.stream_id),
        el("dt", null, "confidence"), el("dd", null, num(event.confidence, 3) + " (tier " + event.tier + ")"),
        el("dt", null, "sources"), el("dd", null, Array.isArray(event.sources) ? event.sources.join(", ") : ""),
        el("dt", null, "media time"), el("dd", null, num(event.media_time_s, 2) + " s" +
          (Array.isArray(event.span_s) ? " (words " + num(event.span_s[0], 1) + "–" + num(event.span_s[1], 1) + " s)" : "")),
        el("dt", null, "latency"), el("dd", null, num(event.latency_ms, 0) + " ms"),
        event.origin ? [el("dt", null, "origin"), el("dd", null, event.origin +
          (event.moderator_id ? " · " + event.moderator_id : ""))] : "",
        event.note ? [el("dt", null, "note"), el("dd", null, event.note)] : ""),
    ];
    const box = el("div", { class: "evidence-box" }, el("p", { class: "muted" }, "Loading evidence…"));
    parts.push(box);
    renderDetail(...parts);
    if (!event.evidence_id) {
      box.replaceChildren(el("p", { class: "muted" }, "No evidence kept for this action."));
      return;
    }
    box.replaceChildren(...await evidenceParts(event.evidence_id, event.regions, event.seq));
  }

  async function evidenceParts(eid, regions, actionSeq) {
    let record;
    try {
      record = await apiJson("/v1/evidence/" + encodeURIComponent(eid));
    } catch (err) {
      return [el("p", { class: "error" }, "Evidence " + eid + ": " + err.message)];
    }
    const out = [el("h3", null, "Evidence")];
    if (record.image) out.push(evidenceCanvas(eid, regions, "evidence"));
    if (record.audio) out.push(await audioPlayer(eid));
    if (record.text) out.push(el("blockquote", { class: "transcript" }, record.text));
    out.push(scoresTable(record.scores));
    const esc = state.escalations.get(actionSeq);
    if (esc) out.push(verdictBlock(esc.verdict, esc.outcome));
    return out;
  }

  async function audioPlayer(eid) {
    const audio = el("audio", { controls: true, class: "audio" });
    try {
      const resp = await api("/v1/evidence/" + encodeURIComponent(eid) + "/audio");
      if (resp.ok) audio.src = URL.createObjectURL(await resp.blob());
    } catch (_) {
      /* shown without sound */
    }
    return audio;
  }

  function scoresTable(scores) {
    const entries = scores && typeof scores === "object" ? Object.entries(scores) : [];
    if (!entries.length) return el("p", { class: "muted" }, "No scores kept.");
    return el("table", { class: "table scores" },
      el("tbody", null, entries.map(([k, v]) => el("tr", null, el("td", null, k),
        el("td", { class: "num" }, num(v, 3))))));
  }

  function verdictBlock(verdict, outcome) {
    if (!verdict && !outcome) return "";
    const v = verdict || {};
    return el("div", { class: "verdict" },
      el("h3", null, "LLM verdict", outcome ? " · " + outcome : ""),
      verdict ? el("p", null, (v.unsafe ? "unsafe" : "safe") + " · " + String(v.label || "") +
        " · " + num(v.confidence, 2) + " · suggests " + String(v.action || "")) : "",
      v.rationale ? el("blockquote", null, v.rationale) : "");
  }

  // -- review queue ----------------------------------------------------------

  async function refreshReviews() {
    const ticket = ++state.reviewTicket;
    try {
      const body = await apiJson("/v1/reviews?status=open");
      if (ticket !== state.reviewTicket) return;
      state.reviews = body.reviews;
      renderReviews();
      const sel = state.selected;
      if (sel && sel.kind === "review") {
        const item = state.reviews.find((r) => r.id === sel.id);
        if (item && item.status !== sel.status) showReview(item);
        else if (!item) {
          const done = await apiJson("/v1/reviews/" + encodeURIComponent(sel.id));
          if (done.status !== sel.status) showReview(done);
        }
      }
    } catch (err) {
      if (!(err instanceof AuthError)) setConn("API: " + err.message, "warn");
    }
  }

  function claimText(item) {
    if (item.status !== "claimed") return item.status;
    return "claimed by " + item.claimed_by;
  }

  function renderReviews() {
    const list = $("reviews");
    clear(list);
    const shown = state.reviews.filter(matches);
    for (const item of shown) {
      const mine = item.claimed_by === state.moderator;
      list.append(el("li", {
        class: "review clickable" + (state.selected && state.selected.id === item.id ? " selected" : ""),
        data: { review: item.id, status: item.status },
        tabIndex: 0,
        on: { click: () => showReview(item) },
      },
      sevBadge(item.severity), " ",
      el("strong", null, item.category), " ",
      el("span", { class: "who" }, item.user_id), " @ ", el("span", { class: "who" }, item.room_id),
      el("div", { class: "muted small" }, "priority " + item.priority + " · level " + item.level +
        " · " + String(item.reason || "") + " · queued " + fmtTime(item.created_at) + " · ",
      el("span", { class: "claim" + (item.status === "claimed" ? (mine ? " mine" : " other") : ""),
        data: { claim: item.id } }, claimText(item)))));
    }
    $("review-count").textContent = String(shown.length);
    $("reviews-empty").hidden = shown.length > 0;
  }

  function showReview(item) {
    state.selected = { kind: "review", id: item.id, status: item.status };
    state.reviewIndex = state.reviews.findIndex((r) => r.id === item.id);
    renderReviews();
    const decided = item.status === "decided";
    const other = item.status === "claimed" && item.claimed_by !== state.moderator;
    const note = el("textarea", { class: "note", placeholder: "Note (why), kept with the decision",
      maxLength: 2000, disabled: decided || other });
    note.id = "review-note";
    const button = (label, key, op, cls) => el("button", {
      type: "button", class: cls || "", data: { op }, disabled: decided || other,
      title: "key: " + key, on: { click: () => (op === "claim" ? claim(item) : decide(item, op, note.value)) },
    }, label, el("kbd", null, key));
    const evidence = Array.isArray(item.evidence) ? item.evidence : [];
    const firstId = item.evidence_id;
    renderDetail(
      el("h2", null, "Review ", sevBadge(item.severity), " ", item.category),
      el("p", { class: "claim-state" + (other ? " other" : ""), data: { claim: item.id } },
        decided ? "decided: " + item.decision + " by " + item.decided_by : claimText(item)),
      el("dl", { class: "facts" },
        el("dt", null, "user @ room"), el("dd", null, item.user_id + " @ " + item.room_id),
        el("dt", null, "why here"), el("dd", null, String(item.reason || "") + " (level " + item.level + ")"),
        el("dt", null, "action"), el("dd", null, String(item.action || "–") + " · " + String(item.tier || "") +
          " · confidence " + num(item.confidence, 2)),
        el("dt", null, "sources"), el("dd", null, Array.isArray(item.sources) ? item.sources.join(", ") : ""),
        el("dt", null, "media time"), el("dd", null, num(item.media_time_s, 2) + " s"),
        item.possible_minor ? [el("dt", null, "flag"), el("dd", { class: "error" }, "possible minor")] : ""),
      el("div", { class: "buttons" },
        button("Claim", "c", "claim"),
        button("Uphold", "u", "uphold", "ok"),
        button("Overturn", "o", "overturn", "danger"),
        button("Escalate", "e", "escalate")),
      note,
      el("div", { class: "frames" }, evidence.map((e, i) =>
        evidenceCanvas(e.id, e.id === firstId ? item.regions : null, i === 0 ? "evidence" : "thumb"))),
      item.transcript ? [el("h3", null, "Transcript"), el("blockquote", { class: "transcript" }, item.transcript)] : "",
      item.ocr_text ? [el("h3", null, "On-screen text"), el("blockquote", { class: "transcript" }, item.ocr_text)] : "",
      el("h3", null, "Scores"), scoresTable(item.scores),
      verdictBlock(item.verdict, null),
      el("h3", null, "History"),
      el("ol", { class: "list history" }, (Array.isArray(item.history) ? item.history : []).map((h) =>
        el("li", null, fmtTime(h.at) + " " + String(h.event) +
          (h.reviewer_id ? " · " + h.reviewer_id : "") + (h.reason ? " · " + h.reason : ""),
        h.note ? el("div", { class: "muted" }, h.note) : ""))));
    if (firstId) {
      // Speech evidence keeps a WAV of what was said rather than a picture.
      apiJson("/v1/evidence/" + encodeURIComponent(firstId)).then(async (record) => {
        if (!record.audio || !state.selected || state.selected.id !== item.id) return;
        const frames = document.querySelector("#detail .frames");
        const player = await audioPlayer(firstId);
        const still = frames && [...frames.children].find((c) => c.dataset.evidence === firstId);
        if (still) still.replaceWith(player);
        else if (frames) frames.prepend(player);
      }).catch(() => undefined);
    }
  }

  async function claim(item) {
    try {
      const done = await apiJson("/v1/reviews/" + encodeURIComponent(item.id) + "/claim",
        { method: "POST", json: { reviewer_id: state.moderator } });
      flash("Claimed.");
      showReview(done);
    } catch (err) {
      flash("Could not claim: " + err.message, true);
    }
    refreshReviews();
  }

  async function decide(item, decision, note) {
    try {
      const done = await apiJson("/v1/reviews/" + encodeURIComponent(item.id) + "/decide",
        { method: "POST", json: { reviewer_id: state.moderator, decision, note: note || "" } });
      flash("Decided: " + decision + ".");
      showReview(done);
    } catch (err) {
      flash("Could not decide: " + err.message, true);
    }
    refreshReviews();
    refreshStreams();
  }

  function onKey(event) {
    if ($("app").hidden) return;
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const shown = state.reviews.filter(matches);
    const sel = state.selected;
    const item = sel && sel.kind === "review" ? shown.find((r) => r.id === sel.id) : null;
    const note = () => ($("review-note") ? $("review-note").value : "");
    switch (event.key) {
      case "j":
      case "k": {
        if (!shown.length) return;
        let i = item ? shown.indexOf(item) : -1;
        i = event.key === "j" ? Math.min(shown.length - 1, i + 1) : Math.max(0, i - 1);
        showReview(shown[i]);
        break;
      }
      case "c":
        if (item) claim(item);
        break;
      case "u":
        if (item) decide(item, "uphold", note());
        break;
      case "o":
        if (item) decide(item, "overturn", note());
        break;
      case "e":
        if (item) decide(item, "escalate", note());
        break;
      default:
        return;
    }
    event.preventDefault();
  }

  // -- detail panel and messages --------------------------------------------------

  function renderDetail(...children) {
    const detail = $("detail");
    clear(detail);
    detail.append(el("div", { class: "flash", hidden: true }));
    for (const child of children.flat()) if (child) detail.append(child);
  }

  function flash(text, bad) {
    const box = document.querySelector("#detail .flash");
    if (!box) return;
    box.textContent = text;
    box.className = "flash" + (bad ? " error" : "");
    box.hidden = false;
  }

  // -- boot ----------------------------------------------------------------------

  async function boot() {
    $("login-form").addEventListener("submit", (e) => {
      submitLogin(e).catch((err) => {
        $("login-error").textContent = "Could not reach the daemon: " + err.message;
      });
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("filter-room").addEventListener("input", applyFilters);
    $("filter-user").addEventListener("input", applyFilters);
    document.addEventListener("keydown", onKey);
    if (state.token && state.moderator) {
      start();
      return;
    }
    showLogin("");
  }

  // For tests and for a platform's own tooling: the page's state, read-only use.
  window.livemodConsole = { state, addAction, onEvent };
  boot();
})();
