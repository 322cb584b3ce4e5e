#!/usr/bin/env python3
"""GRIP test backend for pollgate, built on the real `gripcontrol` library.

Behaves exactly like backend.mjs (the Node twin); see README.md for the
interface. Env: GRIP_KEY, GRIP_ISS, PUBLISH_URL, optional PUBLISH_TOKEN,
optional PUBLISH_ISS (defaults to GRIP_ISS).

Run with the venv interpreter (tests/grip/.venv/bin/python) or with any
python3 that can import gripcontrol: if `gripcontrol` is not importable and
tests/grip/.venv exists, the script re-executes itself with the venv python.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    import gripcontrol  # noqa: F401
except ImportError:  # pragma: no cover - bootstrap into the venv
    _here = os.path.dirname(os.path.abspath(__file__))
    _venv = os.path.join(_here, ".venv")
    _venv_py = os.path.join(_venv, "bin", "python")
    if os.path.exists(_venv_py) and os.path.realpath(sys.prefix) != os.path.realpath(_venv):
        os.execv(_venv_py, [_venv_py, os.path.abspath(__file__)] + sys.argv[1:])
    raise

from gripcontrol import (
    Channel,
    GripPubControl,
    HttpResponseFormat,
    HttpStreamFormat,
    Response,
    create_grip_channel_header,
    create_hold_response,
    validate_sig,
)

GRIP_KEY = os.environ.get("GRIP_KEY") or None
GRIP_ISS = os.environ.get("GRIP_ISS") or None
PUBLISH_URL = (os.environ.get("PUBLISH_URL") or "http://127.0.0.1:5561").rstrip("/")
PUBLISH_TOKEN = os.environ.get("PUBLISH_TOKEN") or None
PUBLISH_ISS = os.environ.get("PUBLISH_ISS") or GRIP_ISS


def make_publisher():
    # gripcontrol/pubcontrol semantics (PubControl.apply_config):
    #   control_uri + control_iss + key -> "Authorization: Bearer <JWT{iss,exp}>" (HS256, key)
    #   control_uri + key (no iss)      -> "Authorization: Bearer <key>" (literal bearer token)
    #   control_uri only                -> no Authorization header
    cfg = {"control_uri": PUBLISH_URL}
    if PUBLISH_TOKEN:
        cfg["key"] = PUBLISH_TOKEN
    elif GRIP_KEY and PUBLISH_ISS:
        cfg["control_iss"] = PUBLISH_ISS
        cfg["key"] = GRIP_KEY
    return GripPubControl(cfg)


PUB = make_publisher()
PUB_LOCK = threading.Lock()


def sig_valid(headers):
    token = headers.get("Grip-Sig")
    if not token or not GRIP_KEY:
        return False
    # Library check: HS256/RS256/ES256, requires exp (not expired), iss == GRIP_ISS.
    return bool(validate_sig(token, GRIP_KEY, GRIP_ISS))


def parse_grip_last(headers):
    """Hand-parsed: gripcontrol has no Grip-Last parser.

    Grip-Last: <channel>; last-id=<id>   (repeatable and/or comma-joined)
    """
    out = {}
    for value in headers.get_all("Grip-Last") or []:
        for part in value.split(","):
            params = [p.strip() for p in part.split(";")]
            name = params[0]
            if not name:
                continue
            for p in params[1:]:
                k, _, v = p.partition("=")
                if k.strip().lower() == "last-id":
                    v = v.strip()
                    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                        v = v[1:-1]
                    out[name] = v
    return out


def q1(query, name, default=None):
    vals = query.get(name)
    return vals[0] if vals else default


def channels_from(query, key):
    raw = q1(query, key, "") or ""
    prev = q1(query, "prev")
    names = [c for c in raw.split(",") if c]
    return [Channel(n, prev) if prev else Channel(n) for n in names]


def to_int(s, default=0):
    try:
        return int(s)
    except (TypeError, ValueError):
        return default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "grip-test-backend-py"

    def log_message(self, fmt, *args):  # keep stdout clean (LISTENING line only)
        sys.stderr.write("backend.py: " + (fmt % args) + "\n")

    def _send(self, code, body, ctype, headers=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or []):
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code, obj, headers=None):
        self._send(code, json.dumps(obj, separators=(",", ":")), "application/json", headers)

    def _drain_body(self):
        n = to_int(self.headers.get("Content-Length"), 0)
        if n > 0:
            self.rfile.read(n)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method):
        self._drain_body()
        u = urlsplit(self.path)
        path, query = u.path, parse_qs(u.query, keep_blank_values=True)
        try:
            if method == "GET" and path == "/hold/response":
                return self.hold_response(query, instruct=False)
            if method == "GET" and path == "/hold/instruct":
                return self.hold_response(query, instruct=True)
            if method == "GET" and path == "/hold/stream":
                return self.hold_stream(query)
            if method == "GET" and path == "/plain":
                return self._send(200, "plain", "text/plain")
            if method == "GET" and path == "/sig":
                return self._json(200, {"valid": sig_valid(self.headers)})
            if method == "POST" and path == "/publish":
                return self.publish(query)
            if method == "POST" and path == "/publish-many":
                return self.publish_many(query)
            return self._json(404, {"error": "not found"})
        except Exception as e:  # keep serving; report as 500
            return self._json(500, {"error": str(e)})

    def hold_response(self, query, instruct):
        valid = "true" if sig_valid(self.headers) else "false"
        last = parse_grip_last(self.headers)
        if last:
            return self._json(200, {"status": "caught-up", "last": last}, [("X-Sig-Valid", valid)])
        channels = channels_from(query, "channels")
        timeout = to_int(q1(query, "timeout"), 0)
        race = q1(query, "race")
        if race:
            # A publish that lands while this answer is being made (and is
            # acknowledged before it goes out): the hold must not miss it.
            self._publish_one(channels[0].name, "response", race, None, None)
        body = json.dumps({"status": "timeout"}, separators=(",", ":"))
        if instruct:
            # Library-built JSON instruction (application/grip-instruct).
            resp = Response(
                code=200,
                headers={"Content-Type": "application/json", "X-Sig-Valid": valid},
                body=body,
            )
            doc = create_hold_response(channels, resp, timeout if timeout > 0 else None)
            return self._send(200, doc, "application/grip-instruct", [("X-Sig-Valid", valid)])
        # Header form: Grip-Channel from the library; Grip-Hold / Grip-Timeout by hand
        # (gripcontrol has no header builder for them). Grip-Timeout only when > 0, like
        # @fanoutio/grip's GripInstruct.toHeaders().
        headers = [("Grip-Channel", create_grip_channel_header(channels)), ("Grip-Hold", "response")]
        if timeout > 0:
            headers.append(("Grip-Timeout", str(timeout)))
        headers.append(("X-Sig-Valid", valid))
        return self._send(200, body, "application/json", headers)

    def hold_stream(self, query):
        channels = channels_from(query, "channel")
        headers = [("Grip-Channel", create_grip_channel_header(channels)), ("Grip-Hold", "stream")]
        ka = q1(query, "keepalive")
        if ka is not None and ka != "":
            # Hand-built, same string as @fanoutio/grip createKeepAliveHeader("ka\n", SECS).
            headers.append(("Grip-Keep-Alive", "ka\\n; format=cstring; timeout=%d" % to_int(ka, 0)))
        return self._send(200, "stream-start\n", "text/plain", headers)

    def _publish_one(self, channel, kind, text, id_, prev):
        with PUB_LOCK:
            if kind == "response":
                fmt = HttpResponseFormat(headers={"Content-Type": "text/plain"}, body=text)
                PUB.publish_http_response(channel, fmt, id=id_, prev_id=prev, blocking=True)
            elif kind == "stream":
                PUB.publish_http_stream(channel, HttpStreamFormat(text), id=id_, prev_id=prev, blocking=True)
            elif kind == "close":
                PUB.publish_http_stream(channel, HttpStreamFormat(close=True), id=id_, prev_id=prev, blocking=True)
            else:
                raise ValueError("unknown kind: %s" % kind)

    def publish(self, query):
        channel = q1(query, "channel", "")
        kind = q1(query, "kind", "response")
        text = q1(query, "body", "")
        id_ = q1(query, "id") or None
        prev = q1(query, "prev") or None
        if kind not in ("response", "stream", "close"):
            return self._json(400, {"ok": False, "error": "unknown kind: %s" % kind})
        try:
            self._publish_one(channel, kind, text, id_, prev)
        except Exception as e:
            return self._json(502, {"ok": False, "error": str(e)})
        return self._json(200, {"ok": True})

    def publish_many(self, query):
        channel = q1(query, "channel", "")
        count = to_int(q1(query, "count"), 0)
        prefix = q1(query, "prefix", "")
        prev = None
        try:
            for i in range(count):
                id_ = "%s%d" % (prefix, i)
                self._publish_one(channel, "stream", id_ + "\n", id_, prev)
                prev = id_
        except Exception as e:
            return self._json(502, {"ok": False, "error": str(e)})
        return self._json(200, {"ok": True, "count": count})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sys.stdout.write("LISTENING %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
