// The panel's behaviour on top of server-rendered pages (htmx does forms and links):
// live redraws from /v1/stream, ticking wait times and the 24-hour countdown, canned
// responses on "/", and auto-submitting selects. Everything works without it, reloading.
(function () {
  "use strict";
  var stream = null;
  var pending = new Map(); // element id -> the latest event for it not yet drawn
  var busy = new Set(); // element ids with a redraw in flight (htmx drops a second one)
  var latest = new Map(); // conversation id -> the last position the stream told of it
  var timer = null;
  var due = 0; // when the timer fires
  var BEHIND_RETRY_MS = 1000;

  function schedule(delay) { // the redraw runs at the earliest time asked for
    var at = Date.now() + delay;
    if (timer && due <= at) return;
    if (timer) clearTimeout(timer);
    due = at;
    timer = setTimeout(redraw, delay);
  }

  function redraw() {
    timer = null;
    pending.forEach(function (seen, id) {
      if (busy.has(id)) return; // drawn again when the one in flight ends
      pending.delete(id);
      var el = document.getElementById(id);
      if (!el) return;
      var src = el.dataset.liveSrc;
      var sep = src.indexOf("?") < 0 ? "?" : "&";
      var wait = el.dataset.liveConversation ? seen.position : seen.conversation + ":" + seen.position;
      busy.add(id);
      fetch(src + sep + "wait=" + encodeURIComponent(wait), { headers: { "HX-Request": "true" } })
        .then(function (answer) {
          var away = answer.headers.get("HX-Redirect");
          if (away) { window.location.assign(away); return null; }
          // Drawn before the read models had the event: ask again (unless a newer one came).
          if (answer.headers.get("X-Urbana-Behind") && !pending.has(id)) {
            pending.set(id, { conversation: seen.conversation, position: seen.position, retry: true });
          }
          return answer.ok ? answer.text() : null;
        })
        .then(function (html) {
          var now = document.getElementById(id);
          if (html === null || !now) return;
          now.outerHTML = html;
          var fresh = document.getElementById(id);
          if (fresh && window.htmx) htmx.process(fresh);
        })
        .catch(function () { /* the next event (or a reload) draws it */ })
        .finally(function () {
          busy.delete(id);
          var next = pending.get(id);
          if (next) schedule(next.retry ? BEHIND_RETRY_MS : 0);
          catchUp();
        });
    });
  }

  // A conversation drawn before the read models had what the stream already told of
  // (a redraw or a form's screen that stopped waiting for them) is drawn again until
  // it shows it: the event will not come a second time.
  function catchUp() {
    document.querySelectorAll("[data-live-conversation][data-position]").forEach(function (el) {
      var seen = latest.get(el.dataset.liveConversation);
      if (seen === undefined || Number(el.dataset.position) >= seen || pending.has(el.id)) return;
      pending.set(el.id, { conversation: el.dataset.liveConversation, position: seen, retry: true });
      schedule(BEHIND_RETRY_MS);
    });
  }

  function onEvent(type, message) {
    var data = {};
    try { data = JSON.parse(message.data); } catch (e) { return; }
    var position = Number(message.lastEventId);
    var known = latest.get(data.conversation_id);
    if (data.conversation_id && !(known >= position)) {
      if (latest.size >= 1000) latest.clear(); // a long shift: start over rather than grow
      latest.set(data.conversation_id, position);
    }
    document.querySelectorAll("[data-live-src]").forEach(function (el) {
      var types = (el.dataset.liveEvents || "").split(" ");
      if (types.indexOf(type) < 0) return;
      var only = el.dataset.liveConversation;
      if (only && only !== data.conversation_id) return;
      pending.set(el.id, { conversation: data.conversation_id, position: position });
    });
    if (type === "handoff.requested") notify();
    if (pending.size) schedule(100);
  }

  function notify() {
    var note = document.getElementById("live-note");
    if (note) note.textContent = "Nova conversa aguardando atendente.";
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.15);
    } catch (e) { /* no sound allowed yet: the badge and the note say it */ }
  }

  function connect() {
    var url = document.body.dataset.stream;
    if (!url || stream || !window.EventSource) return;
    stream = new EventSource(url);
    ["handoff.requested", "conversation.updated", "message.created", "channel.updated"].forEach(function (type) {
      stream.addEventListener(type, function (m) { onEvent(type, m); });
    });
    stream.addEventListener("open", function () { document.body.dataset.live = "on"; });
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }
  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? h + " h " : "") + two(m) + " min " + two(s) + " s";
  }

  // Times arrive in UTC; show them in the attendant's own zone.
  var clock = new Intl.DateTimeFormat("pt-BR", { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit" });
  function localTimes() {
    document.querySelectorAll("time[datetime]:not([data-since]):not([data-countdown]):not([data-local])").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) { el.textContent = clock.format(at); el.dataset.local = "1"; }
    });
  }

  function tick() {
    var now = Date.now();
    localTimes();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = span((now - Date.parse(el.dataset.since)) / 1000);
    });
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var left = (Date.parse(el.dataset.countdown) - now) / 1000;
      el.textContent = span(left);
      if (left <= 0) {
        var form = document.getElementById("reply-form");
        var closed = document.querySelector("[data-window-closed]");
        if (form) form.remove();
        if (closed) { closed.hidden = false; closed.setAttribute("role", "status"); }
      }
    });
    var list = document.getElementById("conversation-list");
    if (list) {
      var n = Number(list.dataset.waiting || 0);
      document.title = (n ? "(" + n + ") " : "") + "Fila · Urbana";
      var badge = document.getElementById("waiting-badge");
      if (badge && badge.firstChild.nodeValue !== String(n)) {
        badge.firstChild.nodeValue = String(n);
        badge.hidden = !n;
      }
    }
  }

  // Canned responses: "/" at the start of the reply lists them; arrows and Enter pick one.
  function cannedOptions() {
    var box = document.getElementById("canned");
    return box ? Array.prototype.slice.call(box.querySelectorAll("[role=option]")) : [];
  }
  function showCanned(text) {
    var box = document.getElementById("canned");
    if (!box) return;
    var open = /^\/\S*$/.test(text);
    var any = false;
    cannedOptions().forEach(function (o) {
      var match = open && o.dataset.shortcut.indexOf(text.slice(1).toLowerCase()) === 0;
      o.hidden = !match;
      o.removeAttribute("aria-selected");
      any = any || match;
    });
    box.hidden = !any;
  }
  function pick(option) {
    var area = document.getElementById("reply-text");
    area.value = option.dataset.text;
    document.getElementById("canned").hidden = true;
    area.focus();
  }

  document.addEventListener("input", function (e) {
    if (e.target.id === "reply-text") showCanned(e.target.value);
  });
  document.addEventListener("keydown", function (e) {
    if (e.target.id !== "reply-text") return;
    var box = document.getElementById("canned");
    if (!box || box.hidden) return;
    var shown = cannedOptions().filter(function (o) { return !o.hidden; });
    var at = shown.findIndex(function (o) { return o.getAttribute("aria-selected") === "true"; });
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (at >= 0) shown[at].removeAttribute("aria-selected");
      at = e.key === "ArrowDown" ? (at + 1) % shown.length : (at - 1 + shown.length) % shown.length;
      shown[at].setAttribute("aria-selected", "true");
      e.target.setAttribute("aria-activedescendant", shown[at].id);
    } else if (e.key === "Enter" && at >= 0) {
      e.preventDefault();
      pick(shown[at]);
    } else if (e.key === "Escape") {
      box.hidden = true;
    }
  });
  document.addEventListener("click", function (e) {
    var option = e.target.closest && e.target.closest("#canned [role=option]");
    if (option) pick(option);
  });

  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("[data-autosubmit]")) e.target.form.requestSubmit();
  });

  // Kanban: dropping a card on a column moves the lead there (the card's menu does the same).
  document.addEventListener("dragstart", function (e) {
    var card = e.target.closest && e.target.closest("[data-lead]");
    if (card) e.dataTransfer.setData("text/plain", card.dataset.lead);
  });
  document.addEventListener("dragover", function (e) {
    if (e.target.closest && e.target.closest("[data-stage]")) e.preventDefault();
  });
  document.addEventListener("drop", function (e) {
    var column = e.target.closest && e.target.closest("[data-stage]");
    var lead = e.dataTransfer.getData("text/plain");
    if (!column || !lead) return;
    e.preventDefault();
    var select = document.getElementById("stage-" + lead);
    if (select && select.value !== column.dataset.stage) {
      select.value = column.dataset.stage;
      select.form.requestSubmit();
    }
  });

  document.documentElement.classList.add("js");
  function start() {
    connect();
    document.addEventListener("htmx:afterSettle", catchUp);
    tick();
    setInterval(tick, 1000);
    if ("serviceWorker" in navigator) navigator.serviceWorker.register("/panel/sw.js", { scope: "/panel/" });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
