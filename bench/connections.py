"""How many slow connections it takes to hurt a fast client (docs/reliability.md).

    python -m bench.connections [--steps 1000,3000,12000] [--max-connections 1000]

Serves a one-route app with the service's waitress set-up (service/http/serving.py, default limits)
on 127.0.0.1, opens slow connections in bursts as fast as it can (half idle, half stuck in their
headers), and prints, after each burst, what the server holds, how many it evicted, and the
slowest ``/healthz`` answer during and after the burst. Needs about 1.2 x the largest step in
open files (ulimit -n).
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time

import requests
from flask import Flask

from service.http.serving import DrainingServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1000,3000,12000", help="total slow connections after each burst")
    parser.add_argument("--max-connections", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    app = Flask("bench")
    app.add_url_rule("/healthz", "healthz", lambda: {"ok": True})
    server = DrainingServer(app, shutdown_timeout=1.0, max_connections=args.max_connections, host="127.0.0.1", port=0, threads=8)
    host, port = server.addresses[0]
    threading.Thread(target=server.serve, daemon=True).start()
    url = f"http://{host}:{port}/healthz"
    worst = [0.0]
    failures = [0]
    stop = threading.Event()

    def probe() -> float:
        started = time.monotonic()
        try:
            if requests.get(url, timeout=30).status_code != 200:
                failures[0] += 1
        except requests.RequestException:
            failures[0] += 1
        return time.monotonic() - started

    def prober() -> None:
        while not stop.wait(0.1):
            worst[0] = max(worst[0], probe())

    threading.Thread(target=prober, daemon=True).start()
    sockets: list[socket.socket] = []
    try:
        for step in (int(x) for x in args.steps.split(",")):
            worst[0] = 0.0
            started = time.monotonic()
            while len(sockets) < step:
                sock = socket.create_connection((host, port))
                if len(sockets) % 2:
                    sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
                sockets.append(sock)
            burst = time.monotonic() - started
            time.sleep(1.0)
            after = max(probe() for _ in range(5))
            held = len([c for c in server._channels()])
            print(
                f"{step:6d} slow connections opened ({burst:.1f} s): server holds {held}, evicted {server.evicted};"
                f" /healthz worst {worst[0]:.3f} s during the burst, {after:.3f} s after; failed probes {failures[0]}"
            )
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
        server.stop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
