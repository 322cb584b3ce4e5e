"""Python's own http.server as a legacy app would use it (HTTP/1.0: one
request per connection, closed after the answer), for pollgate's proxy
tests (tests/it/app_servers.rs). `python legacy.py PORT`; every request is
logged to $APP_LOG as "METHOD ID" (ID from the x-req header).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from applog import log


class Handler(BaseHTTPRequestHandler):
    # The default, stated: HTTP/1.0.
    protocol_version = "HTTP/1.0"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        log(self.command, self.headers.get("x-req", "-"))
        out = json.dumps({"path": self.path, "body_len": len(body)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
