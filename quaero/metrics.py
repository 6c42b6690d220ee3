"""Prometheus metrics (prometheus-client), on an HTTP endpoint of each service when it is given
--metrics-listen HOST:PORT: what both services share is defined here; each service adds its own.

Every RPC is counted and timed by method and status code (quaero.rpc.interceptors.RpcMetrics)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_SECONDS = Histogram("quaero_rpc_seconds", "Time to answer an RPC (unary: the whole call; streams: until the "
                        "handler returns), by method and status code", ["method", "code"],
                        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
RPC_TOTAL = Counter("quaero_rpc", "RPCs answered, by method and status code", ["method", "code"])
# The server's watchdog (quaero.rpc.watchdog): its own health check through its own server.
SERVER_STALLED = Gauge("quaero_server_stalled", "1 while the server has answered no call of its own watchdog for "
                       "the stall limit (its RPC workers or gRPC's completion-queue thread are stuck), else 0")
SERVER_STALLS = Counter("quaero_server_stalls", "Times the server was found stalled")
SERVER_PROBE_SECONDS = Gauge("quaero_server_probe_seconds", "How long the watchdog's last health check through the "
                             "server took (its timeout when it got no answer)")


def serve_metrics(listen: str) -> int:
    """Serves /metrics on HOST:PORT (port 0: a free one); returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    return int(server.server_port)
