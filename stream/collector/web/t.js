/* funnel stream tracker (docs/collector.md). No dependencies, no cookies.
 *
 *   <script async src="https://collect.example.com/t.js" data-key="WRITE_KEY"></script>
 *   <a data-funnel-phone href="tel:+15555550152">+1 555 555 0152</a>
 *   funnel.track("signup", {user_id: "u1", method: "account"});
 *   funnel.track("cart", {action: "add", value: 19.9, currency: "EUR"});
 *
 * A visit is sent when a session starts (its landing page's URL and referrer); the
 * collector turns UTM tags, click ids and the referrer into channel, source,
 * medium, campaign and keyword. Events wait in a queue in localStorage until
 * the collector acknowledges them, so a closed tab or a network error loses
 * nothing: the next page load sends them again (each has its event_id, so a
 * repeat counts once). Phone numbers marked data-funnel-phone are swapped for
 * a number leased to this session, so a call is attributed to the visit.
 */
(function (window, document) {
  "use strict";
  var script = document.currentScript;
  var base = script ? script.src.replace(/\/t\.js(\?.*)?$/, "") : "";
  var key = script ? script.getAttribute("data-key") || "" : "";
  var SESSION_IDLE_MS = 30 * 60 * 1000;
  var MAX_QUEUE = 200;
  var store = safeStorage();

  function safeStorage() {
    try {
      var s = window.localStorage;
      s.setItem("_f_t", "1");
      s.removeItem("_f_t");
      return s;
    } catch (e) {
      var mem = {};
      return {
        getItem: function (k) { return k in mem ? mem[k] : null; },
        setItem: function (k, v) { mem[k] = String(v); },
        removeItem: function (k) { delete mem[k]; }
      };
    }
  }

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function read(name) {
    try { return JSON.parse(store.getItem(name)); } catch (e) { return null; }
  }

  function write(name, value) {
    try { store.setItem(name, JSON.stringify(value)); } catch (e) { /* full: keep going */ }
  }

  function visitorId() {
    var id = read("_f_vid");
    if (!id) { id = "v-" + uuid(); write("_f_vid", id); }
    return id;
  }

  var CAMPAIGN = /[?&](utm_[a-z]+|gclid|gbraid|wbraid|msclkid|yclid|fbclid|ttclid)=/;

  // A session (a visit) ends after 30 minutes without a page view, or when the
  // page is reached from another campaign (new UTM tags or click id), as web
  // analytics count sessions. It remembers its landing page and referrer: the
  // touch of its visit and of the tracking number leased for it.
  function session() {
    var now = Date.now();
    var s = read("_f_session");
    var campaign = CAMPAIGN.test(location.search) && (!s || s.search !== location.search);
    if (!s || now - s.seen > SESSION_IDLE_MS || campaign) {
      s = { id: "s-" + uuid(), url: location.href.slice(0, 2048), search: location.search,
            referrer: document.referrer.slice(0, 2048), number: null, fresh: true };
    } else {
      s.fresh = false;
    }
    s.seen = now;
    write("_f_session", s);
    return s;
  }

  var visitor = visitorId();
  var current = session();

  function envelope(type, fields) {
    var ev = { type: type, event_id: uuid(), occurred_at: new Date().toISOString() };
    for (var k in fields) if (Object.prototype.hasOwnProperty.call(fields, k)) ev[k] = fields[k];
    if (!ev.visitor_id) ev.visitor_id = visitor;
    return ev;
  }

  function queue() { return read("_f_queue") || []; }

  function enqueue(ev) {
    var q = queue();
    q.push(ev);
    write("_f_queue", q.slice(-MAX_QUEUE));
  }

  function forget(sent) {
    var ids = {};
    for (var i = 0; i < sent.length; i++) ids[sent[i].event_id] = true;
    write("_f_queue", queue().filter(function (ev) { return !ids[ev.event_id]; }));
  }

  var flushing = false;
  var retryMs = 1000;

  // Send the queue; an event leaves it once the collector answered 200 for it
  // (a 4xx for the whole batch too: resending cannot help; rejections of single
  // events are in the answer and on the dead-letter topic).
  function flush() {
    var pending = queue();
    if (flushing || !pending.length || !window.fetch) return;
    flushing = true;
    var body = JSON.stringify({ batch: pending });
    window.fetch(base + "/v1/batch?key=" + encodeURIComponent(key), {
      method: "POST", body: body, keepalive: body.length < 60000,
      headers: { "Content-Type": "text/plain" }
    }).then(function (resp) {
      flushing = false;
      if (resp.status === 200 || (resp.status >= 400 && resp.status < 500 && resp.status !== 429)) {
        forget(pending);
        retryMs = 1000;
        if (queue().length) flush();
      } else {
        later();
      }
    }, function () { flushing = false; later(); });
  }

  function later() {
    setTimeout(flush, retryMs);
    retryMs = Math.min(retryMs * 2, 60000);
  }

  // Leaving the page: hand what is left to the browser (sendBeacon outlives the
  // page). It stays queued, since a beacon reports no answer; the next page
  // sends it again and the repeat counts once.
  function beacon() {
    var pending = queue();
    if (!pending.length || !navigator.sendBeacon) return;
    navigator.sendBeacon(base + "/v1/batch?key=" + encodeURIComponent(key),
      JSON.stringify({ batch: pending }));
  }

  function track(type, fields) {
    enqueue(envelope(type, fields || {}));
    flush();
  }

  function showNumber(number) {
    var nodes = document.querySelectorAll("[data-funnel-phone]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = number;
      if (nodes[i].tagName === "A") nodes[i].setAttribute("href", "tel:" + number);
      nodes[i].setAttribute("data-funnel-phone", "leased");
    }
  }

  // Dynamic number insertion: one lease per session while it is valid.
  function insertNumber() {
    if (!document.querySelector("[data-funnel-phone]") || !window.fetch) return;
    var s = read("_f_session") || current;
    if (s.number && s.until && s.until * 1000 > Date.now()) { showNumber(s.number); return; }
    window.fetch(base + "/v1/number", {
      method: "POST", headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ visitor_id: visitor, session_id: s.id, url: s.url, referrer: s.referrer })
    }).then(function (resp) { return resp.ok ? resp.json() : null; }).then(function (got) {
      if (!got || !got.number) return;
      s.number = got.number;
      s.until = got.until || (Date.now() / 1000 + 300);
      write("_f_session", s);
      showNumber(got.number);
    }, function () { /* keep the page's own number */ });
  }

  var api = window.funnel || {};
  api.track = track;
  api.flush = flush;
  api.visitorId = function () { return visitor; };
  api.sessionId = function () { return current.id; };
  window.funnel = api;

  // One visit per session, at its landing page; later pages only flush the queue.
  if (current.fresh) {
    track("visit", {
      session_id: current.id,
      url: current.url,
      referrer: current.referrer || undefined
    });
  } else {
    flush();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", insertNumber);
  else insertNumber();
  window.addEventListener("pagehide", beacon);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") beacon();
  });
})(window, document);
