#!/usr/bin/env python3
"""A TCP proxy that can be cut, for bench/warm.sh: forwards LISTEN to
UPSTREAM (both host:port) until it gets SIGUSR1, which closes every
connection and refuses new ones (a database that went down); SIGUSR2 lets
connections through again.

    python3 bench/cutproxy.py 127.0.0.1:15432 127.0.0.1:5432 &
    kill -USR1 $!   # cut
    kill -USR2 $!   # restore
"""
import asyncio
import signal
import sys

up = True
open_writers = set()


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(client_reader, client_writer, upstream):
    if not up:
        client_writer.close()
        return
    host, port = upstream
    try:
        server_reader, server_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    open_writers.update((client_writer, server_writer))
    try:
        await asyncio.gather(
            pipe(client_reader, server_writer), pipe(server_reader, client_writer)
        )
    finally:
        open_writers.difference_update((client_writer, server_writer))


def cut():
    global up
    up = False
    for writer in list(open_writers):
        writer.close()
    open_writers.clear()


def restore():
    global up
    up = True


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def main():
    listen, upstream = address(sys.argv[1]), address(sys.argv[2])
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, upstream), listen[0], listen[1]
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
