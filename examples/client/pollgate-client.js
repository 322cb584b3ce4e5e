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
 *   fires at once and the cursor starts from pollgate's answer.
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
    this._loop();
    return this;
  };

  PollgateClient.prototype.stop = function () {
    this._running = false;
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
        self._attempt = 0;
        if (!self._connected) {
          self._connected = true;
          self._emit("connected");
        }
        self._deliver(body);
        // Immediately poll again, from the new cursor.
        self._loop();
      })
      .catch(function (err) {
        clearTimeout(deadline);
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
      });
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

  return PollgateClient;
});
