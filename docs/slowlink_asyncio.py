#!/usr/bin/env python3
"""The slow-link scenario with no Torsion in it: a Python asyncio echo
server and asyncio clients on the same kind of test network as
`a_slow_link_with_many_connections_keeps_the_server_bounded`
(crates/echo/tests/network.rs), for telling the network's behaviour from
Torsion's (docs/reliability.md, "The full-size slow link").

    sudo python3 docs/slowlink_asyncio.py                 # 100 × 64 KiB, 10 Mbit/s
    sudo python3 docs/slowlink_asyncio.py --connections 1000 --kbit 1000

Builds three namespaces, server - router - client, shapes both of the
router's outgoing interfaces with tbf (16 KiB burst, a tail-drop queue of
one full-size packet per connection and at least 200 ms at the rate),
runs the server in the server namespace and the clients in the client
namespace (each a child process under `ip netns exec`), and deletes the
namespaces at the end. The clients make every connection first, then
each writes its whole payload at once and checks that every byte comes
back; the script prints how many were verified and how the others ended.

Needs root, `ip` and `tc` (iproute2); standard library only. This is a
re-creation, for the record, of the script the figures in
docs/reliability.md were first taken with (that scratch copy was not
kept); the network it builds is the test harness's.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time

PORT = 7007


def sh(*args):
    subprocess.run(args, check=True)


def build(prefix, kbit, queue):
    server, router, client = (f"{prefix}{n}" for n in ("s", "r", "c"))
    for ns in (server, router, client):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    for n, (near, dev) in enumerate(((server, "pys"), (client, "pyc")), start=1):
        sh("ip", "-n", near, "link", "add", dev, "type", "veth",
           "peer", "name", dev + "r", "netns", router)
        for ns, d, ip in ((near, dev, f"10.78.{n}.1"), (router, dev + "r", f"10.78.{n}.2")):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", d)
            sh("ip", "-n", ns, "link", "set", d, "gso_max_segs", "1", "up")
        other = 3 - n
        sh("ip", "-n", near, "route", "add", f"10.78.{other}.0/24", "via", f"10.78.{n}.2")
        sh("tc", "-n", router, "qdisc", "replace", "dev", dev + "r", "root", "tbf",
           "rate", f"{kbit}kbit", "burst", "16kb", "limit", str(queue))
    sh("ip", "netns", "exec", router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    return server, router, client


async def serve():
    async def echo(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()  # back-pressure: stop reading while the queue is full
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "10.78.1.1", PORT, backlog=1024)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


async def clients(connections, size):
    payload = lambda i: (bytes((i * 7 + k) & 0xFF for k in range(256)) * (size // 256 + 1))[:size]
    ends = {}
    made = []

    async def connect(i):
        try:
            made.append((i,) + await asyncio.wait_for(
                asyncio.open_connection("10.78.1.1", PORT), 30))
        except (OSError, asyncio.TimeoutError) as e:
            ends[i] = f"connect: {e!r}"

    started = time.monotonic()
    await asyncio.gather(*(connect(i) for i in range(connections)))

    async def run(i, reader, writer):
        sent = payload(i)
        writer.write(sent)
        got = bytearray()
        try:
            while len(got) < len(sent):
                data = await reader.read(65536)
                if not data:
                    break
                got += data
            ends[i] = "verified" if got == sent else f"{len(got)} of {len(sent)} bytes back"
        except OSError as e:
            ends[i] = f"after {time.monotonic() - started:.1f} s: {e!r}"
        writer.close()

    await asyncio.gather(*(run(*m) for m in made))
    verified = sum(1 for v in ends.values() if v == "verified")
    print(f"{verified} of {connections} verified in {time.monotonic() - started:.1f} s")
    for i, v in sorted(ends.items()):
        if v != "verified":
            print(f"  connection {i}: {v}")
    return verified == connections


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--bytes", type=int, default=64 * 1024)
    p.add_argument("--kbit", type=int, default=10_000)
    p.add_argument("--role", choices=["server", "clients"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "server":
        asyncio.run(serve())
        return
    if a.role == "clients":
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        sys.exit(0 if asyncio.run(clients(a.connections, a.bytes)) else 1)
    queue = max(a.kbit * 1000 // 8 // 5 + 16 * 1024, a.connections * 1514)
    prefix = f"pysl{os.getpid()}"
    names = [prefix + n for n in ("s", "r", "c")]
    try:
        server_ns, _, client_ns = build(prefix, a.kbit, queue)
        me = [sys.executable, os.path.abspath(__file__), "--connections", str(a.connections),
              "--bytes", str(a.bytes)]
        server = subprocess.Popen(["ip", "netns", "exec", server_ns] + me + ["--role", "server"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()  # "listening"
            done = subprocess.run(["ip", "netns", "exec", client_ns] + me + ["--role", "clients"])
        finally:
            server.kill()
            server.wait()
        sys.exit(done.returncode)
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
