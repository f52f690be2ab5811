#!/usr/bin/env python3
"""A fast loopback webhook receiver for scripts/bench-webhooks.sh.

HTTP/1.1 with keep-alive on asyncio streams-free protocol code (no
framework), answering every POST with `204 No Content` at once. For each
request it notes the `webhook-id` and the arrival time (Unix microseconds).

    webhook-receiver.py PORT     (0: any free port; the port is printed)

    GET  /stats   -> "<requests> <distinct webhook-ids>"
    GET  /dump    -> one line per request: "<webhook-id> <arrival µs>"
    POST /reset   -> forgets everything
    anything else -> 204 (a delivery)

Standard library only.
"""

import asyncio
import sys
import time

ARRIVALS = []  # (webhook-id, microseconds)


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            webhook_id = ""
            connection = ""
            lines = head.split("\r\n")
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "webhook-id":
                    webhook_id = value.strip()
                elif name == "connection":
                    connection = value.strip().lower()
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            method, path, version = (lines[0].split(" ") + ["", "", ""])[:3]
            # HTTP/1.1 keeps the connection unless told otherwise; 1.0 (ab)
            # only with "Connection: keep-alive".
            if version == "HTTP/1.0":
                self.keep = "keep-alive" if connection == "keep-alive" else None
            else:
                self.keep = None if connection == "close" else ""
            if method == "GET" and path == "/stats":
                ids = len({i for i, _ in ARRIVALS})
                self.reply(200, f"{len(ARRIVALS)} {ids}\n".encode())
            elif method == "GET" and path == "/dump":
                body = "".join(f"{i} {t}\n" for i, t in ARRIVALS).encode()
                self.reply(200, body)
            elif method == "POST" and path == "/reset":
                ARRIVALS.clear()
                self.reply(204, b"")
            else:
                ARRIVALS.append((webhook_id, time.time_ns() // 1000))
                self.reply(204, b"")

    def reply(self, code, body):
        reason = {200: "OK", 204: "No Content"}[code]
        extra = "connection: keep-alive\r\n" if self.keep else ""
        head = f"HTTP/1.1 {code} {reason}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        self.transport.write(head.encode() + body)
        if self.keep is None:
            self.transport.close()


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
