"""Prometheus metrics (prometheus-client), on an HTTP endpoint of each service when it is given
--metrics-listen HOST:PORT: what both services share is defined here; each service adds its own.

Every RPC is counted and timed by method and status code (quaero.rpc.interceptors.RpcMetrics)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_SECONDS = Histogram("quaero_rpc_seconds", "Time to answer an RPC (unary: the whole call; streams: until the "
                        "handler returns), by method and status code", ["method", "code"],
                        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
RPC_TOTAL = Counter("quaero_rpc", "RPCs answered, by method and status code", ["method", "code"])


def serve_metrics(listen: str) -> int:
    """Serves /metrics on HOST:PORT (port 0: a free one); returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    return int(server.server_port)
