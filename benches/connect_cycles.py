#!/usr/bin/env python3
"""Connect / poll / disconnect cycles against a running pollgate (public listener on
127.0.0.1:8080, e.g. `pollgate --config benches/bench.yaml`), printing pollgate's RSS
before and after. Each cycle opens a connection, sends a long poll, waits 2 ms (so the
poll is held) and closes: the client is gone mid-hold.

    python3 benches/connect_cycles.py 1000000 $(pgrep -f 'pollgate --config benches/bench.yaml')
"""
import asyncio, sys, time, os
N = int(sys.argv[1]); CONC = 64
REQ = b"GET /api/poll/c%d?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n"
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def worker(k, n, held_wait):
    for i in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", 8080)
        w.write(REQ % ((k * n + i) % 100)); await w.drain()
        if held_wait: await asyncio.sleep(0.002)
        w.close()
        try: await w.wait_closed()
        except Exception: pass
async def main():
    pid = int(sys.argv[2])
    # warm up
    await asyncio.gather(*(worker(k, 200, True) for k in range(CONC)))
    before = rss(pid); t = time.time()
    per = N // CONC
    await asyncio.gather(*(worker(k, per, True) for k in range(CONC)))
    await asyncio.sleep(2)
    print(f"cycles={per*CONC} seconds={time.time()-t:.1f} rss_before_kib={before} rss_after_kib={rss(pid)}")
asyncio.run(main())
