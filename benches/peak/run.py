#!/usr/bin/env python3
"""Memory after a publish-heavy peak (README, Reliability).

Starts pollgate (the binary given, or target/release/pollgate) on the
memory broker with messages kept for MAX_AGE seconds, reads its RSS, sends
one GRIP (EPCP) publish of ITEMS items with ids over CHANNELS channels, then
reads its RSS until the messages and the ids have expired (GRIP_ID_TTL,
60 s) and the sweep has given the memory back. Prints the three figures and
whether RSS came back within 10 % of where it was.

    benches/peak/run.py [BINARY] [--items 50000] [--channels 5000]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

GRIP_ID_TTL = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary", nargs="?", default="target/release/pollgate")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--channels", type=int, default=5_000)
    ap.add_argument("--max-age", type=int, default=10)
    args = ap.parse_args()
    public, hook = free_port(), free_port()
    conf = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    conf.write(
        f'listen: "127.0.0.1:{public}"\nwebhook: {{ listen: "127.0.0.1:{hook}", max_body: 64MiB }}\n'
        f"buffer: {{ max_age: {args.max_age}s }}\nroutes: [ {{ prefix: /api/poll/, poll: {{}} }} ]\n"
    )
    conf.close()
    pg = subprocess.Popen([args.binary, "--config", conf.name], env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{hook}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # Settle: a few ordinary publishes, then the figure before.
        for n in range(100):
            publish(hook, {"items": [{"channel": f"warm{n}", "formats": {"http-response": {"body": "x"}}}]})
        time.sleep(2)
        before = rss_kib(pg.pid)
        items = [
            {
                "channel": f"peak{n % args.channels}",
                "id": f"item-{n}",
                "formats": {"http-response": {"body": f"item {n} " + "y" * 40}},
            }
            for n in range(args.items)
        ]
        body = json.dumps({"items": items}).encode()
        publish(hook, body)
        peak = rss_kib(pg.pid)
        # The messages expire after max_age, the ids after GRIP_ID_TTL; the
        # sweep then trims. Read until then, and a little after.
        deadline = time.time() + max(args.max_age, GRIP_ID_TTL) + 10
        while time.time() < deadline:
            time.sleep(1)
            peak = max(peak, rss_kib(pg.pid))
        after = rss_kib(pg.pid)
        ratio = after / before
        print(f"publish: {len(body) / 1e6:.1f} MB, {args.items} items over {args.channels} channels")
        print(f"RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, after {after / 1024:.1f} MiB")
        print(f"after / before = {ratio:.3f} ({'within' if ratio <= 1.10 else 'NOT within'} 10 %)")
        return 0 if ratio <= 1.10 else 1
    finally:
        pg.terminate()
        pg.wait()
        os.unlink(conf.name)


def publish(hook, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{hook}/publish/", data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()


if __name__ == "__main__":
    sys.exit(main())
