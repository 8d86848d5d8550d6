// msdm expert evaluation page. Plain JavaScript, no framework, no build step.
//
// Every answer is POSTed the moment it is given; the server commits it to SQLite before replying. An answer that
// cannot be sent (server down, network) waits in a queue kept in localStorage and is re-sent in order, so a
// crash, a reload or a closed tab loses nothing. The page never learns which model is behind a letter.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // DOM builder: text always goes through textContent (prompts are data, never markup).
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  let study = null;
  let rater = null;
  let values = new Map();       // "prompt|item|aspect" -> value
  let comments = {};            // prompt -> text
  let progress = null;          // from the server
  let current = 0;              // study index of the prompt on screen
  let view = "login";
  const GLOBAL = -1;
  const RANK = "rank";
  const GLOBAL_RANK = "global_rank";
  const key = (p, item, aspect) => `${p}|${item}|${aspect}`;

  // ------------------------------------------------------------------ server
  async function api(path, body) {
    const opt = body === undefined ? { cache: "no-store" } : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), keepalive: true,
    };
    const r = await fetch(path, opt);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error(data.error || r.statusText);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  // ------------------------------------------------------------------ save queue (survives reloads)
  let queue = [];
  let flushing = false;
  let retryTimer = null;
  const queueKey = () => `msdm-annotate:${study.id}:${rater}:pending`;

  function persistQueue() {
    try { localStorage.setItem(queueKey(), JSON.stringify(queue)); } catch (e) { /* private mode: memory only */ }
  }

  function loadQueue() {
    try { queue = JSON.parse(localStorage.getItem(queueKey()) || "[]"); } catch (e) { queue = []; }
    for (const m of queue) {
      if (m.path === "/api/answer") values.set(key(m.body.prompt, m.body.item, m.body.aspect), m.body.value);
      else comments[m.body.prompt] = m.body.text;
    }
  }

  function setStatus(state, text) {
    const s = $("#save-state");
    s.className = state;
    s.textContent = text;
  }

  function enqueue(path, body) {
    const same = (m) => m.path === path && m.body.prompt === body.prompt && m.body.item === body.item
      && m.body.aspect === body.aspect;
    // Only the latest value of a question needs sending, but never reorder: drop older ones not yet in flight.
    queue = queue.filter((m, i) => (flushing && i === 0) || !same(m));
    queue.push({ path, body });
    persistQueue();
    flush();
  }

  async function flush() {
    if (flushing) return;
    flushing = true;
    clearTimeout(retryTimer);
    setStatus("saving", "saving…");
    try {
      while (queue.length) {
        const m = queue[0];
        try {
          const res = await api(m.path, m.body);
          if (res.progress) progress = res.progress;
        } catch (e) {
          if (e.status >= 400 && e.status < 500 && ![401, 408, 429].includes(e.status)) {
            setStatus("offline", `not saved: ${e.message}`);   // refused by the server: do not retry it
          } else {
            setStatus("offline", `not saved yet (${queue.length} waiting) — retrying; keep this page open`);
            retryTimer = setTimeout(flush, 2000);
            return;
          }
        }
        queue.shift();
        persistQueue();
      }
      setStatus("saved", "all answers saved ✓");
      updateBar();
    } finally {
      flushing = false;
    }
  }
  window.addEventListener("online", flush);

  function answer(prompt, item, aspect, value) {
    values.set(key(prompt, item, aspect), value);
    enqueue("/api/answer", { rater, prompt, item, aspect, value });
  }

  // ------------------------------------------------------------------ completeness (mirrors store.py)
  function itemsOf() { return [...study.letters, study.real_item]; }

  function missingOf(k) {
    const miss = [];
    for (const letter of study.letters) {
      for (const a of study.aspects) if (!values.has(key(k, letter, a.id))) miss.push({ item: letter, aspect: a.id });
    }
    const ranks = itemsOf().map((it) => values.get(key(k, it, RANK)));
    itemsOf().forEach((it, i) => { if (ranks[i] === undefined) miss.push({ item: it, aspect: RANK }); });
    return { miss, duplicate: duplicates(ranks) };
  }

  function duplicates(ranks) {
    const seen = new Set();
    for (const r of ranks) {
      if (r === undefined) continue;
      if (seen.has(r)) return r;
      seen.add(r);
    }
    return null;
  }

  function complete(k) {
    const m = missingOf(k);
    return m.miss.length === 0 && m.duplicate === null;
  }

  function globalLetters() { return Object.keys(study.global.sets); }

  function globalComplete() {
    const ranks = globalLetters().map((l) => values.get(key(GLOBAL, l, GLOBAL_RANK)));
    return !ranks.includes(undefined) && duplicates(ranks) === null;
  }

  // ------------------------------------------------------------------ widgets
  let uid = 0;
  function choiceGroup({ legend, help, options, prompt, item, aspect }) {
    const name = `g${uid++}`;
    const currentValue = values.get(key(prompt, item, aspect));
    const opts = el("div", { class: "opts" });
    for (const v of options) {
      const id = `${name}-${v}`;
      const input = el("input", {
        type: "radio", name, id, value: String(v), checked: currentValue === v,
        "data-prompt": prompt, "data-item": item, "data-aspect": aspect,
      });
      input.addEventListener("change", () => {
        if (!input.checked) return;
        answer(prompt, item, aspect, v);
        fs.classList.remove("missing");
        if (aspect === RANK || aspect === GLOBAL_RANK) checkRanks();
        updateBar();
      });
      opts.append(input, el("label", { for: id, text: String(v) }));
    }
    const fs = el("fieldset", {
      class: "choice", "data-max": String(Math.max(...options)), "data-min": String(Math.min(...options)),
      "data-key": key(prompt, item, aspect),
    }, el("legend", { text: legend, title: help || null }), opts);
    return fs;
  }

  function imageGrid(paths, caption) {
    return el("div", { class: "grid" }, paths.map((p, i) => el("img", {
      src: "/" + p, alt: `${caption}, image ${i + 1}`, loading: "lazy", "data-set": caption,
      onclick: () => openLightbox(paths, i, caption),
    })));
  }

  function range(a, b) { return Array.from({ length: b - a + 1 }, (_, i) => a + i); }

  // ------------------------------------------------------------------ views
  function show(name) {
    view = name;
    for (const id of ["login", "rate", "global", "done"]) $("#" + id).hidden = id !== name;
    updateBar();
  }

  function updateBar() {
    if (!study) return;
    const n = study.prompts.length;
    const nDone = study.prompts.filter((p) => complete(p.index)).length;
    $("#done-bar").max = n;
    $("#done-bar").value = nDone;
    $("#done-bar").title = `${nDone} of ${n} prompts complete`;
    const where = $("#where");
    if (view === "rate") where.textContent = `Prompt ${current + 1} of ${n} · ${nDone} complete`;
    else if (view === "global") where.textContent = `Global preference · ${nDone} of ${n} prompts complete`;
    else if (view === "done") where.textContent = "Finished";
    else where.textContent = "";
    $("#who").textContent = rater ? `rater: ${rater}` : "";
  }

  function renderPrompt(k) {
    current = k;
    const pr = study.prompts[k];
    const [lo, hi] = study.score_range;
    const root = $("#rate");
    root.replaceChildren();
    root.append(
      el("div", { class: "prompt-head" },
        el("h1", { class: "prompt-text", id: "prompt-text", text: `“${pr.text}”` }),
        el("span", { class: "badge", text: pr.kind })),
      el("section", { class: "block real", "aria-label": "real reference images" },
        el("h2", { text: `Real reference images (${pr.real.length})` }), imageGrid(pr.real, "Real")),
    );
    for (const letter of study.letters) {
      const scores = el("div", { class: "scores" }, study.aspects.map((a) => choiceGroup({
        legend: a.label, help: a.help, options: range(lo, hi), prompt: k, item: letter, aspect: a.id,
      })));
      root.append(el("section", { class: "block", id: `set-${letter}`, "aria-label": `Model ${letter}` },
        el("h2", { text: `Model ${letter}` }),
        el("div", { class: "set" }, imageGrid(pr.sets[letter], `Model ${letter}`), scores)));
    }
    const items = itemsOf();
    root.append(el("section", { class: "block rank", id: "rank" },
      el("h2", { text: `Rank the ${items.length} sets for this prompt (1 = best, each rank once)` }),
      items.map((it) => choiceGroup({
        legend: it === study.real_item ? "Real images" : `Model ${it}`, options: range(1, items.length),
        prompt: k, item: it, aspect: RANK,
      })),
      el("p", { class: "rank-warning warn", role: "alert", id: "rank-warning" })));
    const ta = el("textarea", { id: "comment", "aria-label": "comment on this prompt (optional)" });
    ta.value = comments[k] || "";
    ta.addEventListener("change", () => { comments[k] = ta.value; enqueue("/api/comment", { rater, prompt: k, text: ta.value }); });
    root.append(el("section", { class: "block" }, el("label", { for: "comment", text: "Comment (optional)" }), ta));
    root.append(el("nav", { class: "steps" },
      el("button", { type: "button", id: "prev", disabled: k === 0, onclick: goPrev, text: "← Previous (p)" }),
      el("span", { id: "missing", role: "alert" }),
      el("button", { type: "button", id: "next", class: "primary", onclick: goNext,
        text: k === study.prompts.length - 1 ? "Global preference → (n)" : "Next prompt → (n)" })));
    show("rate");
    checkRanks();
    window.scrollTo(0, 0);
    focusFirstOpen(root);
  }

  function renderGlobal() {
    const root = $("#global");
    root.replaceChildren();
    const letters = globalLetters();
    root.append(el("h1", { class: "prompt-text", text: "Global preference" }),
      el("p", { text: "Each panel shows images of one model across several prompts (letters are new on this page). "
        + `Rank the ${letters.length} models overall, 1 = the one you prefer most.` }));
    for (const letter of letters) {
      root.append(el("section", { class: "block", id: `global-${letter}` },
        el("h2", { text: `Model ${letter}` }), imageGrid(study.global.sets[letter], `Global ${letter}`)));
    }
    root.append(el("section", { class: "block rank", id: "global-rank" },
      el("h2", { text: "Global preference ranking (1 = best, each rank once)" }),
      letters.map((l) => choiceGroup({ legend: `Model ${l}`, options: range(1, letters.length), prompt: GLOBAL,
        item: l, aspect: GLOBAL_RANK })),
      el("p", { class: "rank-warning warn", role: "alert", id: "rank-warning" })));
    root.append(el("nav", { class: "steps" },
      el("button", { type: "button", id: "prev", onclick: goPrev, text: "← Last prompt (p)" }),
      el("span", { id: "missing", role: "alert" }),
      el("button", { type: "button", id: "next", class: "primary", onclick: goNext, text: "Finish (n)" })));
    show("global");
    checkRanks();
    window.scrollTo(0, 0);
    focusFirstOpen(root);
  }

  function focusGroup(fs) {
    const input = $("input:checked", fs) || $("input", fs);
    if (input) input.focus();
    return !!input;
  }

  function focusFirstOpen(root) {
    const open = $$("fieldset.choice", root).find((fs) => !$("input:checked", fs));
    if (!open) return;
    const input = $("input", open);
    input.focus({ preventScroll: true });     // stay at the top (the prompt) when the question is in view
    const r = open.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) open.scrollIntoView({ block: "center" });
  }

  function checkRanks() {
    const warn = $("#rank-warning");
    if (!warn) return;
    const ranks = view === "global"
      ? globalLetters().map((l) => values.get(key(GLOBAL, l, GLOBAL_RANK)))
      : itemsOf().map((it) => values.get(key(current, it, RANK)));
    const d = duplicates(ranks);
    warn.textContent = d === null ? "" : `Rank ${d} is given more than once: each rank once, please.`;
  }

  // ------------------------------------------------------------------ navigation
  function markMissing(root, keys) {
    for (const fs of $$("fieldset.choice", root)) fs.classList.toggle("missing", keys.has(fs.dataset.key));
    const first = $$("fieldset.choice", root).find((fs) => keys.has(fs.dataset.key));
    if (first) { focusGroup(first); first.scrollIntoView({ block: "center" }); }
  }

  function goNext() {
    if (view === "rate") {
      const m = missingOf(current);
      if (m.miss.length || m.duplicate !== null) {
        const n = m.miss.length;
        $("#missing").textContent = n ? `${n} answer${n > 1 ? "s" : ""} missing (marked in red)`
          : `Rank ${m.duplicate} is given twice`;
        const keys = new Set(m.miss.map((x) => key(current, x.item, x.aspect)));
        if (!n) itemsOf().forEach((it) => { if (values.get(key(current, it, RANK)) === m.duplicate) keys.add(key(current, it, RANK)); });
        markMissing($("#rate"), keys);
        return;
      }
      if (current + 1 < study.prompts.length) renderPrompt(current + 1);
      else renderGlobal();
    } else if (view === "global") {
      if (!globalComplete()) {
        $("#missing").textContent = "Give every model a different rank";
        markMissing($("#global"), new Set(globalLetters().filter((l) => !values.has(key(GLOBAL, l, GLOBAL_RANK)))
          .map((l) => key(GLOBAL, l, GLOBAL_RANK))));
        return;
      }
      const firstOpen = study.prompts.findIndex((p) => !complete(p.index));
      if (firstOpen >= 0) renderPrompt(firstOpen);
      else show("done");
    }
  }

  function goPrev() {
    if (view === "rate" && current > 0) renderPrompt(current - 1);
    else if (view === "global") renderPrompt(study.prompts.length - 1);
  }

  // ------------------------------------------------------------------ keyboard
  // Digits answer the focused question and move on; "1" waits briefly for a "0" (= 10) on 0–10 scales.
  let pendingOne = null;

  function groupOf(node) { return node && node.closest ? node.closest("fieldset.choice") : null; }

  function choose(fs, v) {
    const input = $(`input[value="${v}"]`, fs);
    if (!input) return false;
    input.checked = true;
    input.focus();
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  function advance(fs) {
    const groups = $$("fieldset.choice", fs.closest("section#rate, section#global") || document);
    const i = groups.indexOf(fs);
    if (i >= 0 && i + 1 < groups.length) focusGroup(groups[i + 1]);
    else $("#next") && $("#next").focus();
  }

  function onDigit(fs, d) {
    if (pendingOne) {
      const p = pendingOne;
      clearTimeout(p.timer);
      pendingOne = null;
      if (d === 0 && p.fs === fs && Number(fs.dataset.max) >= 10) { choose(fs, 10); advance(fs); return; }
      advance(p.fs);
      fs = groupOf(document.activeElement);
      if (!fs) return;
    }
    const max = Number(fs.dataset.max);
    const min = Number(fs.dataset.min);
    if (d < min || d > max) return;
    choose(fs, d);
    if (d === 1 && max >= 10) {
      pendingOne = { fs, timer: setTimeout(() => { pendingOne = null; advance(fs); }, 700) };
    } else {
      advance(fs);
    }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!$("#help").hidden) { if (ev.key === "Escape" || ev.key === "?") { closeHelp(); ev.preventDefault(); } return; }
    if (!$("#lightbox").hidden) { lightboxKey(ev); return; }
    const t = ev.target;
    const typing = t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio"));
    if (typing) return;
    const fs = groupOf(t);
    if (fs && /^[0-9]$/.test(ev.key)) { ev.preventDefault(); onDigit(fs, Number(ev.key)); return; }
    if (view !== "rate" && view !== "global") { if (ev.key === "?") openHelp(); return; }
    if (ev.key === "n") { ev.preventDefault(); goNext(); }
    else if (ev.key === "p") { ev.preventDefault(); goPrev(); }
    else if (ev.key === "?") { ev.preventDefault(); openHelp(); }
  });

  // ------------------------------------------------------------------ lightbox and help
  let lb = null;
  function openLightbox(paths, i, caption) {
    lb = { paths, i, caption, back: document.activeElement };
    showLightbox();
    $("#lightbox").hidden = false;
  }
  function showLightbox() {
    $("#lightbox-img").src = "/" + lb.paths[lb.i];
    $("#lightbox-img").alt = `${lb.caption}, image ${lb.i + 1}`;
    $("#lightbox-caption").textContent = `${lb.caption} — image ${lb.i + 1} of ${lb.paths.length} (← → browse, Esc closes)`;
  }
  function closeLightbox() { $("#lightbox").hidden = true; if (lb && lb.back) lb.back.focus(); lb = null; }
  function lightboxKey(ev) {
    ev.preventDefault();
    if (ev.key === "Escape") closeLightbox();
    else if (ev.key === "ArrowRight") { lb.i = (lb.i + 1) % lb.paths.length; showLightbox(); }
    else if (ev.key === "ArrowLeft") { lb.i = (lb.i + lb.paths.length - 1) % lb.paths.length; showLightbox(); }
  }
  $("#lightbox").addEventListener("click", closeLightbox);
  let helpBack = null;
  function openHelp() { helpBack = document.activeElement; $("#help").hidden = false; $("#help-close").focus(); }
  function closeHelp() { $("#help").hidden = true; if (helpBack) helpBack.focus(); }
  $("#help-btn").addEventListener("click", openHelp);
  $("#help-close").addEventListener("click", closeHelp);

  // ------------------------------------------------------------------ sign-in and resume
  // A rater arrives through their personal link (/r/<token>), which sets an HttpOnly cookie: this script never sees
  // the token, and the server decides who the rater is. Without the cookie the API answers 401.
  async function resume() {
    const state = await api("/api/me");
    rater = state.rater;
    values = new Map(state.answers.map((a) => [key(a.prompt, a.item, a.aspect), a.value]));
    comments = {};
    for (const [p, text] of Object.entries(state.comments)) comments[Number(p)] = text;
    progress = state.progress;
    loadQueue();          // answers given while the server was unreachable are newer: apply, then re-send
    if (queue.length) flush();
    else setStatus("saved", state.answers.length ? `welcome back — ${state.progress.complete.length} prompts done` : "");
    // Resume at the first prompt not yet complete (computed by the server from what it has stored).
    const next = queue.length ? study.prompts.findIndex((p) => !complete(p.index)) : progress.next;
    if (next === "done" || (next === -1 && globalComplete())) show("done");
    else if (next === "global" || next === -1) renderGlobal();
    else renderPrompt(next);
  }

  $("#review").addEventListener("click", () => renderPrompt(0));

  async function start() {
    try {
      study = await api("/api/study");
    } catch (e) {
      if (e.status === 401) { show("login"); return; }
      throw e;
    }
    document.title = `${study.title} — msdm`;
    $("#title").textContent = study.title;
    await resume();
  }
  start().catch((e) => { document.body.prepend(el("p", { class: "warn", text: `Cannot load the study: ${e.message}` })); });
})();
