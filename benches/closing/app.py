"""An app that answers one request per connection, HTTP/1.1 with a length
and no `Connection: close`, then closes the socket (a worker that exits
after each request). `python3 app.py PORT [CLOSE_AFTER_MS]`."""
import asyncio
import sys

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def serve(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":", 1)[1]))
        writer.write(ANSWER)
        await writer.drain()
        if CLOSE_AFTER:
            await asyncio.sleep(CLOSE_AFTER)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()


CLOSE_AFTER = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0
asyncio.run(main())
