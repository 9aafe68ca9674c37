#!/usr/bin/env python3
"""A closed-loop HTTP/1.1 load generator for benches/freeze.sh.

CLIENTS clients, each on its own keep-alive connection, send one GET after the other for
DURATION seconds and time every request from the moment it is written (a reconnect included) to
the last byte of its answer. Nothing is cut at the end of the run: requests still in flight then
(e.g. stuck on a frozen node) are waited for, up to --timeout each, and counted with their real
latency. A request fails on a transport error (refused, reset, closed early, a malformed answer),
on --timeout without a full answer (counted with latency = the time waited), or on a status
outside 2xx; after any failure the client opens a new connection.

Prints one JSON object on stdout: requests, failed, errors by kind, statuses, latency p50 / p90 /
p99 / p999 / max in ms (over every request, failed ones included), counts over 250 ms and 1 s,
answers per X-Node, the run's wall time, and, with --window A,B, the same numbers for the
requests in flight at some time between A and B seconds into the run (e.g. during a freeze).
With --samples FILE, every request as "start_s latency_ms status node error" lines.

    python3 loadgen.py --port 8080 --path '/geoserver/wms?...' --clients 4 --duration 12
"""

import argparse
import asyncio
import json
import math
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0, help="seconds during which new requests start")
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--start-at", type=float, default=0.0,
                   help="wall-clock time (time.time()) at which to start; 0: at once")
    p.add_argument("--window", default="", help="A,B: also report the requests in flight at some time in [A, B) s")
    p.add_argument("--samples", default="", help="write every request to this file")
    return p.parse_args()


class Failure(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


async def read_answer(reader):
    """Reads one HTTP/1.1 answer; returns (status, node, keep_alive)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Failure("closed" if not e.partial else "closed-in-head")
    except asyncio.LimitOverrunError:
        raise Failure("head-too-long")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Failure("bad-status-line")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    node = headers.get("x-node", "-")
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    try:
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                await reader.readexactly(size + 2)
        elif status in (204, 304) or 100 <= status < 200:
            pass
        else:
            await reader.read()  # until the peer closes
            keep_alive = False
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        raise Failure("closed-in-body")
    return status, node, keep_alive


async def client(args, request, t0, end, samples):
    reader = writer = None
    loop = asyncio.get_running_loop()
    while loop.time() < end:
        start = loop.time()
        status, node, error = 0, "-", ""
        try:
            async def attempt():
                nonlocal reader, writer
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(args.host, args.port)
                    except ConnectionRefusedError:
                        raise Failure("connect-refused")
                    except OSError:
                        raise Failure("connect-error")
                writer.write(request)
                await writer.drain()
                return await read_answer(reader)

            status, node, keep_alive = await asyncio.wait_for(attempt(), args.timeout)
            if not 200 <= status < 300:
                error = f"status-{status}"
            if not keep_alive:
                writer.close()
                writer = None
        except asyncio.TimeoutError:
            error = "timeout"
        except Failure as f:
            error = f.kind
        except (ConnectionResetError, BrokenPipeError):
            error = "reset"
        except OSError as e:
            error = f"oserror-{e.errno}"
        latency = loop.time() - start
        samples.append((start - t0, latency * 1000.0, status, node, error))
        if error and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def pct(sorted_values, q):
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(samples):
    lat = sorted(s[1] for s in samples)
    errors, statuses, nodes = {}, {}, {}
    for _, _, status, node, error in samples:
        if error:
            errors[error] = errors.get(error, 0) + 1
        if status:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        if not error:
            nodes[node] = nodes.get(node, 0) + 1
    return {
        "requests": len(samples),
        "failed": sum(errors.values()),
        "errors": errors,
        "statuses": statuses,
        "nodes": nodes,
        "p50_ms": round(pct(lat, 50), 3),
        "p90_ms": round(pct(lat, 90), 3),
        "p99_ms": round(pct(lat, 99), 3),
        "p999_ms": round(pct(lat, 99.9), 3),
        "max_ms": round(lat[-1] if lat else 0.0, 3),
        "over_250ms": sum(1 for v in lat if v > 250.0),
        "over_1s": sum(1 for v in lat if v > 1000.0),
    }


async def main():
    args = parse_args()
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: geolb-freeze-loadgen\r\nAccept: */*\r\n\r\n"
    ).encode("latin-1")
    if args.start_at:
        delay = args.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wall0 = time.time()
    end = t0 + args.duration
    samples = []
    await asyncio.gather(*(client(args, request, t0, end, samples) for _ in range(args.clients)))
    out = summary(samples)
    out["clients"] = args.clients
    out["duration_s"] = args.duration
    out["wall_s"] = round(loop.time() - t0, 3)
    out["started_at"] = wall0
    if args.window:
        a, b = (float(x) for x in args.window.split(","))
        w = summary([s for s in samples if s[0] < b and s[0] + s[1] / 1000.0 > a])
        w["from_s"], w["to_s"] = a, b
        out["window"] = w
    if args.samples:
        with open(args.samples, "w") as f:
            for start, latency, status, node, error in sorted(samples):
                f.write(f"{start:.4f} {latency:.3f} {status} {node} {error or '-'}\n")
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
