"""Exits 0 when a Kafka broker at HOST:PORT answers a Metadata request listing at least one
broker, 1 otherwise. Pure standard library: the readiness check of local.sh.

Metadata v4 (non-flexible), request header v1; Kafka 4.x still serves it (KIP-896 removed
only v0-v3)."""

import socket
import struct
import sys


def probe(host: str, port: int) -> bool:
    client_id = b"switchyard-probe"
    correlation_id = 7
    body = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i?", -1, False)  # every topic; no auto-creation
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        response = read_exactly(sock, size)
    got_correlation, _throttle, brokers = struct.unpack(">iii", response[:12])
    return got_correlation == correlation_id and brokers >= 1


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    try:
        sys.exit(0 if probe(host, int(port)) else 1)
    except (OSError, struct.error):
        sys.exit(1)
