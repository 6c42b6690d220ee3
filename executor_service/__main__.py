"""quaero-executor: runs job definitions and crawls their pages."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quaero-executor",
        description="Run Quaero job definitions: create parent jobs, lease child jobs from the manager and crawl "
                    "them with the stored cookies.",
        epilog="Environment: QUAERO_API_TOKEN (the operator token this executor's callers present; else the "
               "api-token file in QUAERO_DATA_DIR, default ./.quaero), QUAERO_EXECUTOR_TOKEN (the token it presents "
               "to the manager; else the executor-token file there), QUAERO_EXECUTOR_ID (its worker id, stable "
               "across restarts; else kept in the executor-id file there), "
               "QUAERO_RESOLVE (HOST=ADDRESS,... like curl --resolve), QUAERO_CA_BUNDLE (extra CA certificates "
               "for https sites), QUAERO_CHROMIUM (the browser for render = \"js\"; default "
               "/usr/lib/chromium/chromium), QUAERO_BROWSER_USER (the unprivileged user it runs as when started as "
               "root; default nobody), QUAERO_TLS_CERT/QUAERO_TLS_KEY (serve TLS), QUAERO_TLS_CA (trust for the manager).")
    parser.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT to serve on (default %(default)s)")
    parser.add_argument("--manager", default="127.0.0.1:50051", help="the manager's HOST:PORT (default %(default)s)")
    parser.add_argument("--workers", type=int, default=16,
                        help="pages fetched at once by this process; 0 runs no workers (default %(default)s)")
    parser.add_argument("--lease-seconds", type=float, default=30.0,
                        help="how long a leased page stays ours without renewal; if this process dies, its pages "
                             "return to pending this long after (default %(default)s)")
    parser.add_argument("--browser-pages", type=int, default=2, metavar="N",
                        help="pages of render = \"js\" runs rendered at once, in one headless Chromium; 2-4 use "
                             "two cores fully (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default %(default)s)")
    parser.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: none)")
    args = parser.parse_args(argv)
    from quaero.config import MissingToken
    from quaero.rpc.server import run_main

    from .config import ExecutorSettings
    from .server import serve

    return run_main("quaero-executor", args.log_level,
                    lambda: serve(ExecutorSettings.from_env(args.listen, args.manager, args.workers, args.lease_seconds,
                                                            args.browser_pages),
                                  args.metrics_listen),
                    expected=(OSError, MissingToken, ValueError))


if __name__ == "__main__":
    sys.exit(main())
