"""A client of the API's event stream for the benchmark, in a process of its own: follows /v1/events from the
given id, asks for /v1/status every second, and when the stream ends writes two delays of every event it got,
one event a line, to OUT: from the change (the time of the core's batch) and from its publication (the end of
that batch) to its receipt, in seconds, and the time of its publication (which tells the batches apart). Usage: sse_client.py URL TOKEN ID OUT"""
from __future__ import annotations

import sys
import threading
import time

import httpx
import orjson


def main(url: str, token: str, last_id: str, out: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    delays: list[tuple[float, float, float]] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, headers=headers) as client:
            while not done.wait(1.0):
                try:
                    client.get("/v1/status")
                except httpx.HTTPError:
                    return

    threading.Thread(target=poll, daemon=True).start()
    try:
        with httpx.stream("GET", url + "/v1/events", headers={**headers, "Last-Event-ID": last_id},
                          timeout=None) as response:
            rest, kind = b"", b""
            for chunk in response.iter_raw():  # as a browser's EventSource: lines split and parsed natively
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.startswith(b"event: "):
                        kind = line[7:]
                    elif line.startswith(b"data: ") and kind == b"states":
                        changes = orjson.loads(line[6:])
                        now = time.time()
                        delays.extend((now - c["at"], now - c["published"], c["published"]) for c in changes)
    except httpx.HTTPError:
        pass
    done.set()
    print(f"sse client: {len(delays)} events, {time.process_time():.2f} s of CPU", file=sys.stderr)
    with open(out, "w") as f:
        f.write("\n".join(f"{made:.6f} {sent:.6f} {published:.6f}" for made, sent, published in delays))


if __name__ == "__main__":
    main(*sys.argv[1:5])
