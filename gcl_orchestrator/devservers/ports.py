"""Free loopback ports."""
from __future__ import annotations

import random
import socket


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(with_grpc_twin: bool = False, taken: set[int] | None = None) -> int:
    """A free port on 127.0.0.1; with `with_grpc_twin`, port + 10000 is free too (SeaweedFS's gRPC rule)."""
    taken = taken if taken is not None else set()
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 30000) if with_grpc_twin else rng.randrange(30000, 60000)
        if port in taken or (port + 10000) in taken:
            continue
        if _free(port) and (not with_grpc_twin or _free(port + 10000)):
            taken.update({port, port + 10000})
            return port
    raise RuntimeError("no free port found on 127.0.0.1")
