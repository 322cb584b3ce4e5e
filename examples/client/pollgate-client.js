/*
 * pollgate-client.js — a dependency-free long-poll client for pollgate.
 * Works in browsers (classic <script> tag: window.PollgateClient) and in
 * Node 18+ (require / import). No build step.
 *
 *   const client = new PollgateClient({ url: "/api/poll/", channel: "chat" });
 *   client.on("message", (data, meta) => console.log(data, meta.timestamp));
 *   client.on("connected", () => ...); client.on("disconnected", () => ...);
 *   client.on("error", (err) => ...);  client.on("gap", (meta) => resync());
 *   client.start();   // ... client.stop();
 *
 * Behaviour:
 * - reconnects immediately after every answer (message or timeout);
 * - carries the `since` cursor (the last `timestamp` received) across
 *   reconnects, so no message is missed or repeated while it is buffered;
 * - on errors, retries with exponential backoff and full jitter (honouring
 *   Retry-After on 429/503), and emits `disconnected` once and `connected`
 *   again when a poll succeeds;
 * - every request has a client-side deadline (server timeout + grace), so a
 *   silently dropped connection is noticed;
 * - the first poll after a start or an error uses timeout=0, so `connected`
 *   fires at once and the cursor starts from pollgate's answer;
 * - then, where the browser has EventSource (and no custom `headers` are
 *   needed: EventSource cannot send them), it switches to a Server-Sent
 *   Events stream on the same URL, from the same cursor; the browser
 *   reconnects a stream by itself with `Last-Event-ID`;
 * - a stream that shows nothing (not even pollgate's opening `ready` event)
 *   within `heartbeatMs` is being held back by a buffering proxy: the client
 *   goes back to long polling for good, from the cursor it had; a first
 *   stream refused (a route with `sse: false`, a proxy that answers
 *   something else) also means polling for good, quietly (the polls report
 *   their own errors); a stream that worked and is then refused (502 while
 *   pollgate restarts behind a proxy, 429, 503...) is an outage: polling
 *   with backoff, and streaming again a minute later.
 *
 *   options.transport: "auto" (default), "poll" (never stream), "sse";
 *   options.heartbeatMs: the server's poll.sse_heartbeat (default 15000);
 *   client.transport: "poll" or "sse", what it uses now.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    module.exports = factory();
  } else {
    root.PollgateClient = factory();
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var EVENTS = ["message", "error", "connected", "disconnected", "gap"];

  function PollgateClient(options) {
    if (!options || !options.url || !options.channel) {
      throw new Error("PollgateClient needs { url, channel }");
    }
    this.url = options.url.replace(/\/?$/, "/");
    this.channel = options.channel;
    this.since = options.since !== undefined ? String(options.since) : undefined;
    this.timeout = options.timeout !== undefined ? options.timeout : 30;
    this.max = options.max;
    this.headers = options.headers || {};
    this.initialDelay = options.initialDelay || 250;
    this.maxDelay = options.maxDelay || 10000;
    this.graceMs = options.graceMs || 10000;
    this.transport = "poll";
    this._want = options.transport || "auto";
    this.heartbeatMs = options.heartbeatMs || 15000;
    // How long a stream that has worked may be reconnecting (the browser
    // waits pollgate's `retry:`, 2 to 3 s, then connects) before
    // `disconnected` is said.
    this.reconnectGraceMs = options.reconnectGraceMs || 5000;
    this.EventSource = options.EventSource || (typeof EventSource !== "undefined" ? EventSource : null);
    this._buffered = false;
    this._noStreamUntil = 0;
    this._es = null;
    this._watch = null;
    this.fetch = options.fetch || (typeof fetch !== "undefined" ? fetch.bind(globalThis) : null);
    if (!this.fetch) throw new Error("no fetch available: pass options.fetch");
    this._handlers = {};
    EVENTS.forEach(function (e) { this._handlers[e] = []; }, this);
    this._running = false;
    this._connected = false;
    this._attempt = 0;
    this._abort = null;
    this._timer = null;
  }

  PollgateClient.prototype.on = function (event, handler) {
    if (!this._handlers[event]) throw new Error("unknown event: " + event);
    this._handlers[event].push(handler);
    return this;
  };

  PollgateClient.prototype._emit = function (event) {
    var args = Array.prototype.slice.call(arguments, 1);
    this._handlers[event].forEach(function (h) {
      try { h.apply(null, args); } catch (e) { if (event !== "error") this._emit("error", e); }
    }, this);
  };

  PollgateClient.prototype.start = function () {
    if (this._running) return this;
    this._running = true;
    // Callbacks of an earlier start (a poll answered after stop()) see the
    // generation moved on and do nothing.
    this._gen = (this._gen || 0) + 1;
    this._loop();
    return this;
  };

  PollgateClient.prototype.stop = function () {
    this._running = false;
    this._gen = (this._gen || 0) + 1;
    this._closeStream();
    if (this._abort) this._abort.abort();
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    if (this._connected) {
      this._connected = false;
      this._emit("disconnected");
    }
    return this;
  };

  PollgateClient.prototype._pollUrl = function () {
    // Until a poll has succeeded, ask with timeout=0: the answer comes at
    // once, so `connected` fires promptly and the cursor is set from it.
    var timeout = this._connected ? this.timeout : 0;
    var params = ["timeout=" + encodeURIComponent(timeout)];
    if (this.since !== undefined) params.push("since=" + encodeURIComponent(this.since));
    if (this.max !== undefined) params.push("max=" + encodeURIComponent(this.max));
    return this.url + encodeURIComponent(this.channel) + "?" + params.join("&");
  };

  PollgateClient.prototype._loop = function () {
    var self = this;
    if (!self._running) return;
    var gen = self._gen;
    var controller = new AbortController();
    self._abort = controller;
    var deadline = setTimeout(function () { controller.abort(); }, self.timeout * 1000 + self.graceMs);
    self
      .fetch(self._pollUrl(), { headers: self.headers, signal: controller.signal, cache: "no-store" })
      .then(function (resp) {
        if (resp.status !== 200) {
          var err = new Error("poll failed: HTTP " + resp.status);
          err.status = resp.status;
          err.retryAfter = Number(resp.headers.get("retry-after")) || 0;
          return resp.text().then(function () { throw err; });
        }
        return resp.json();
      })
      .then(function (body) {
        clearTimeout(deadline);
        if (gen !== self._gen) return;
        self._attempt = 0;
        if (!self._connected) {
          self._connected = true;
          self._emit("connected");
        }
        self._deliver(body);
        // A handler may have stopped the client.
        if (gen !== self._gen) return;
        // Stream from the new cursor where that works, else poll again.
        if (self._streamable()) self._stream();
        else self._loop();
      })
      .catch(function (err) {
        clearTimeout(deadline);
        if (gen !== self._gen) return;
        self._failed(err);
      });
  };

  // A poll or a stream failed: say so once, then poll again after a backoff.
  PollgateClient.prototype._failed = function (err) {
    var self = this;
    if (!self._running) return;
    if (self._connected) {
      self._connected = false;
      self._emit("disconnected");
    }
    self._emit("error", err);
    var ceiling = Math.min(self.maxDelay, self.initialDelay * Math.pow(2, self._attempt));
    self._attempt = Math.min(self._attempt + 1, 30);
    // Full jitter: spread a crowd of clients reconnecting at once.
    var delay = Math.max(Math.random() * ceiling, (err.retryAfter || 0) * 1000);
    self._timer = setTimeout(function () { self._timer = null; self._loop(); }, delay);
  };

  PollgateClient.prototype._streamable = function () {
    if (this._want === "poll" || this._buffered || !this.EventSource) return false;
    if (Date.now() < this._noStreamUntil) return false;
    // EventSource sends no custom headers: a route that needs them polls.
    return this._want === "sse" || Object.keys(this.headers).length === 0;
  };

  PollgateClient.prototype._streamUrl = function () {
    // timeout=0: a route that does not stream answers at once (a long
    // poll's JSON, which EventSource refuses) instead of holding it.
    var url = this.url + encodeURIComponent(this.channel) + "?timeout=0";
    return this.since !== undefined ? url + "&since=" + encodeURIComponent(this.since) : url;
  };

  // Opens the event stream. Until its `ready` event arrives, a watch runs:
  // on a first connect it means a proxy holds the stream back (poll for
  // good); on a reconnect, that pollgate is not back yet (`disconnected`).
  PollgateClient.prototype._stream = function () {
    var self = this;
    var es = new self.EventSource(self._streamUrl());
    var worked = false;
    self._es = es;
    self.transport = "sse";
    // Armed once per wait: the browser's retries (every `retry:`) do not
    // push it back.
    var watch = function (ms) {
      if (self._watch !== null) return;
      self._watch = setTimeout(function () {
        self._watch = null;
        if (self._es !== es) return;
        if (!worked) {
          self._buffered = true;
          self._closeStream();
          self._emit("error", new Error("the event stream showed nothing within " + ms + " ms (a buffering proxy?): long polling instead"));
          self._loop();
        } else if (self._connected) {
          self._connected = false;
          self._emit("disconnected");
        }
      }, ms);
    };
    watch(self.heartbeatMs);
    es.addEventListener("ready", function (e) {
      worked = true;
      clearTimeout(self._watch);
      self._watch = null;
      if (e.lastEventId) self.since = e.lastEventId;
      self._attempt = 0;
      if (!self._connected) {
        self._connected = true;
        self._emit("connected");
      }
    });
    var gap = false;
    es.addEventListener("gap", function (e) {
      self.since = e.lastEventId;
      gap = true;
      self._emit("gap", { timestamp: Number(e.lastEventId), gap: true });
    });
    es.addEventListener("message", function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { self._emit("error", err); return; }
      self.since = e.lastEventId;
      self._emit("message", data, { timestamp: Number(e.lastEventId), gap: gap });
      gap = false;
    });
    es.onerror = function () {
      if (self._es !== es) return;
      if (es.readyState === 2 && !worked) {
        // Never streamed here (`sse: false`, or a proxy in the way): poll
        // for good, without an error of its own or a backoff.
        self._buffered = true;
        self._closeStream();
        self._loop();
      } else if (es.readyState === 2) {
        // Streamed, then refused (an error status, not an event stream):
        // an outage. Poll with the usual backoff; stream again in a minute.
        self._closeStream();
        self._noStreamUntil = Date.now() + 60000;
        self._failed(new Error("the event stream was refused"));
      } else {
        // The browser reconnects by itself, with Last-Event-ID.
        watch(worked ? self.reconnectGraceMs : self.heartbeatMs);
      }
    };
  };

  PollgateClient.prototype._closeStream = function () {
    clearTimeout(this._watch);
    this._watch = null;
    if (this._es) this._es.close();
    this._es = null;
    this.transport = "poll";
  };

  PollgateClient.prototype._deliver = function (body) {
    var meta = { timestamp: body.timestamp, gap: body.gap === true };
    if (meta.gap) this._emit("gap", meta);
    if (body.status === "message") {
      this.since = String(body.timestamp);
      this._emit("message", body.data, meta);
    } else if (body.status === "messages") {
      for (var i = 0; i < body.messages.length; i++) {
        var m = body.messages[i];
        this.since = String(m.timestamp);
        this._emit("message", m, { timestamp: m.timestamp, gap: meta.gap && i === 0 });
      }
      this.since = String(body.timestamp);
    } else if (body.timestamp !== undefined) {
      this.since = String(body.timestamp);
    }
  };

  // `require("pollgate-client")` is the class itself; `.PollgateClient` and
  // `.default` name it too, as the type declarations and the ES module do.
  PollgateClient.PollgateClient = PollgateClient;
  PollgateClient.default = PollgateClient;
  return PollgateClient;
});
