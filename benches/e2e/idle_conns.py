#!/usr/bin/env python3
"""Idle keep-alive connections for the memory run of benches/e2e.sh (stdlib only).

Opens N plain HTTP/1.1 connections to HOST:PORT, sends ONE GET of PATH on each (keep-alive, the
HTTP/1.1 default), reads the whole answer, and then leaves every connection open and idle:

    python3 idle_conns.py --port 18010 --path '/geoserver/wms?...' --conns 10000

When all N are open (or failed) it prints one line on stdout and flushes it:

    open <ok> failed <failed> errors <reason=count,...|-> seconds <time to open them all>

then waits, connections idle, until SIGUSR1 or SIGTERM (or --hold seconds, so that it always
stops by itself), counts the connections the server closed meanwhile (their reader is at EOF),
closes all the others, and prints:

    closed <n> peer_closed <k>

Exit status: 0 when every connection got a 2xx answer, 1 otherwise, 2 on bad arguments. Opens
are bounded by --parallel connects in flight, so that listen backlogs do not overflow (a dropped
SYN costs a 1 s retransmit). Meant for loopback addresses only.
"""

import argparse
import asyncio
import collections
import signal
import sys
import time


async def one_request(host, port, request, timeout):
    """Connects, sends the request, reads the whole answer; returns (reader, writer)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
                size = int(size_line.split(b";")[0].strip(), 16)
                await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                if size == 0:
                    break  # (no trailers expected)
        elif "content-length" in headers:
            await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
        else:
            raise ValueError("answer without length")
        if headers.get("connection") == "close":
            raise ValueError("server closes the connection")
        if not 200 <= status < 300:
            raise ValueError(f"status {status}")
        return reader, writer
    except BaseException:
        writer.close()
        raise


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=200, help="connects in flight at most")
    ap.add_argument("--timeout", type=float, default=10.0, help="per step, seconds")
    ap.add_argument("--hold", type=float, default=300.0, help="idle at most this long, seconds")
    args = ap.parse_args()
    if args.conns < 1 or args.parallel < 1:
        ap.error("--conns and --parallel must be >= 1")

    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: geolb-e2e-idle\r\nAccept: */*\r\n\r\n"
    ).encode("latin-1")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    gate = asyncio.Semaphore(args.parallel)
    conns = []
    errors = collections.Counter()

    async def opener():
        async with gate:
            try:
                conns.append(await one_request(args.host, args.port, request, args.timeout))
            except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
                errors[type(e).__name__ if not isinstance(e, ValueError) else str(e)] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(opener() for _ in range(args.conns)))
    took = time.monotonic() - t0
    failed = sum(errors.values())
    reasons = ",".join(f"{k.replace(' ', '_')}={v}" for k, v in errors.most_common()) or "-"
    print(f"open {len(conns)} failed {failed} errors {reasons} seconds {took:.1f}", flush=True)

    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    peer_closed = sum(1 for reader, _ in conns if reader.at_eof())
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print(f"closed {len(conns)} peer_closed {peer_closed}", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
