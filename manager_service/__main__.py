"""quaero-manager: the jobs database behind gRPC."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quaero-manager",
        description="Serve Quaero's jobs, logs, definitions, credentials and documents over gRPC.",
        epilog="Environment: QUAERO_DATA_DIR (default ./.quaero: SQLite database, api-token and secret.key "
               "files), QUAERO_DATABASE_URL (e.g. postgresql+psycopg://user@host/db instead of SQLite), "
               "QUAERO_API_TOKEN (the operator token; else the api-token file, created on first start), "
               "QUAERO_EXECUTOR_TOKEN (the executor token; else the executor-token file), QUAERO_SECRET_KEY "
               "(else secret.key), QUAERO_TLS_CERT and QUAERO_TLS_KEY (serve TLS).")
    parser.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to serve on; port 0 picks a free "
                        "one (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default %(default)s)")
    parser.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: none)")
    args = parser.parse_args(argv)
    from quaero.rpc.server import run_main

    from .server import serve

    return run_main("quaero-manager", args.log_level, lambda: serve(args.listen, args.metrics_listen),
                    expected=(OSError, ValueError))

if __name__ == "__main__":
    sys.exit(main())
