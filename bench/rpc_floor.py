"""The floor under manager_load's ratios: what a handler's own work costs under gRPC's sync server at 8
calls in flight, beside the no-op it is compared with. One server process (this file, --serve) with the
manager's server model (quaero.rpc.pool.WorkerPool, 2 workers) and no interceptors, serving raw bytes:

- Noop: nothing (the baseline, as health Check is for manager_load);
- Python: ~100 us of pure Python (a loop; nothing that releases the GIL);
- Merge: UpdateJobMetadata's own work on SQLite, without gRPC's and the interceptors' part: the patch read
  from its bytes, the store's merge (checks, the one UPDATE ... RETURNING, the row decoded) and the Job
  answer built and serialised.

For each: the work's CPU in one thread with nothing else running (measured in the server process before
it serves), the server's CPU per call under load, what the call adds to the no-op's, and the factor
between the two: what load does to a handler's own work."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

sys.path.insert(0, os.path.dirname(__file__))
from manager_load import drive  # noqa: E402

from quaero.testing.procfs import process_cpu  # noqa: E402

SERVICE = "floor.Floor"
METHODS = ("Noop", "Python", "Merge")
PATCH: dict[str, Any] = {"auth_id": "site-1", "phase": "execution", "progress": {"pages": 3}}  # manager_load's shape


def python_work(_data: bytes) -> bytes:
    total = 0
    for number in range(2600):  # ~100 us on this machine
        total += number
    return b""


def serve(data_dir: Path) -> None:
    from manager_service.servicers.jobs import job_to_proto
    from manager_service.storage import Stores
    from manager_service.storage.clock import SYSTEM
    from manager_service.storage.db import connect, migrate
    from manager_service.storage.secretbox import SecretBox
    from quaero.convert import struct_to_dict
    from quaero.rpc.pool import WorkerPool

    db = connect(f"sqlite:///{data_dir / 'floor.db'}")
    migrate(db)
    stores = Stores.open(db, SecretBox(bytes(32)), SYSTEM)
    job_id = stores.jobs.create(parent_id="", type="floor", name="floor", config={}, metadata={}, request_id="").id

    def merge(data: bytes) -> bytes:
        patch = struct_to_dict(struct_pb2.Struct.FromString(data), "metadata")
        return job_to_proto(stores.jobs.update_json(job_id, "metadata", patch, False, "")).SerializeToString()

    work: dict[str, Callable[[bytes], bytes]] = {
        "Noop": lambda data: b"", "Python": python_work, "Merge": merge}
    patch = struct_pb2.Struct()
    patch.update(PATCH)
    alone = {}
    for name, body in work.items():  # (best of five: this thread's CPU per call, nothing else running)
        samples = []
        for _ in range(5):
            started = time.thread_time()
            for _ in range(2000):
                body(patch.SerializeToString())
            samples.append((time.thread_time() - started) / 2000 * 1000)
        alone[name] = min(samples)
    server = grpc.server(WorkerPool(2), options=[("grpc.so_reuseport", 0)])
    handlers = {name: grpc.unary_unary_rpc_method_handler(lambda data, context, body=body: body(data))
                for name, body in work.items()}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port, "alone_ms": alone}), flush=True)
    server.wait_for_termination()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are reported)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return 0
    loaded: dict[str, list[float]] = {name: [] for name in METHODS}
    alone: dict[str, list[float]] = {name: [] for name in METHODS}
    patch = struct_pb2.Struct()
    patch.update(PATCH)
    request = patch.SerializeToString()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as data_dir:
            server = subprocess.Popen([sys.executable, __file__, "--serve", data_dir], stdout=subprocess.PIPE, text=True)
            try:
                assert server.stdout is not None
                ready = json.loads(server.stdout.readline())
                with grpc.insecure_channel(f"127.0.0.1:{ready['port']}") as channel:
                    for name in METHODS:
                        alone[name].append(ready["alone_ms"][name])
                        method = channel.unary_unary(f"/{SERVICE}/{name}")

                        def call(_n: int, method: grpc.UnaryUnaryMultiCallable = method) -> grpc.Future:
                            return method.future(request, timeout=30)  # type: ignore[no-any-return]

                        drive(call, args.in_flight, 0.3)  # warm up
                        before = process_cpu(server.pid)
                        result = drive(call, args.in_flight, args.duration)
                        loaded[name].append((process_cpu(server.pid) - before) / result.calls * 1000)
            finally:
                server.kill()
                server.wait()
    noop = statistics.median(loaded["Noop"])
    print(f"\nmedians of {args.runs} runs, {args.in_flight} in flight; server CPU in ms per call\n")
    print("| handler | its work alone | server CPU under load | × no-op | added to the no-op | added ÷ alone |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in METHODS:
        under_load, by_itself = statistics.median(loaded[name]), statistics.median(alone[name])
        added = under_load - noop
        factor = f"{added / by_itself:.2f}" if name != "Noop" else "-"
        print(f"| {name} | {by_itself:.3f} | {under_load:.3f} | {under_load / noop:.2f} | {added:.3f} | {factor} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
