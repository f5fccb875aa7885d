"""What each of issue 11's crafted uploads costs a real ``python -m service`` (docs/reliability.md).

    python -m bench.limits [--only NAME]

Starts a server with default settings in a temporary data directory, sends each crafted upload
of tests/bombs.py once (after a warm-up identify) and prints, per upload: its size, the answer,
wall seconds, the server's CPU seconds (all threads) and how far its resident size rose above
where it was before the request (VmHWM after minus VmRSS before, MiB). Prints the load average,
since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import requests

from tests import bombs
from tests.serverproc import ServerProcess

FACE = Path(__file__).resolve().parents[2] / "shared" / "faces" / "deepface" / "img1.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="run only the uploads whose name contains this")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "data", Path(tmp) / "server.log") as server:
        if FACE.is_file():
            requests.post(server.url("/v1/identify"), files={"file": ("f.jpg", FACE.read_bytes())}, timeout=120)
        print(f"server RSS after warm-up: {bombs.proc_kib(server.pid, 'VmRSS') / 1024:.0f} MiB")
        print(f"{'upload':40} {'KiB':>8} {'answer':>28} {'wall s':>7} {'cpu s':>6} {'RSS +MiB':>9}")
        for item in bombs.crafted_uploads():
            if args.only and args.only not in item.name:
                continue
            body = item.build()
            r = bombs.send_and_measure(server.base, server.pid, item, body)
            answer = f"{r['status']} {r['code'] or ''}".strip()
            print(f"{r['name']:40} {r['upload_kib']:8.0f} {answer:>28} {r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['rss_growth_mib']:9.0f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
