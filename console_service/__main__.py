"""quaero-console: the operator console, a web application over the manager and the executor."""
from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path

from quaero.config import DEFAULT_EXECUTOR, DEFAULT_MANAGER, MissingToken, ServerTls, client_tls_ca, read_token

from .config import DEFAULT_LISTEN, ConsoleSettings, idle_minutes_from_env, service_addresses, split_listen

PROGRAM = "quaero-console"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Serve the operator console: runs, definitions, credentials and documents "
                                  "in a browser, through the manager's and the executor's gRPC APIs.",
        epilog="Environment: QUAERO_API_TOKEN (the operator token; else the api-token file in QUAERO_DATA_DIR), "
               "QUAERO_MANAGER, QUAERO_EXECUTOR, QUAERO_TLS_CERT and QUAERO_TLS_KEY (serve HTTPS), QUAERO_TLS_CA "
               "(the services' certificate), QUAERO_CONSOLE_IDLE_MINUTES.")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT to serve on; port 0 picks a free one "
                        "(default %(default)s). A non-loopback address needs TLS or --allow-public-http.")
    parser.add_argument("--manager", default=None, help=f"the manager's HOST:PORT (default {DEFAULT_MANAGER})")
    parser.add_argument("--executor", default=None, help=f"the executor's HOST:PORT (default {DEFAULT_EXECUTOR})")
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, default=None, help="and this key (PEM)")
    parser.add_argument("--allow-public-http", action="store_true",
                        help="serve plain HTTP on a non-loopback address (only behind a proxy that terminates TLS)")
    parser.add_argument("--idle-minutes", type=float, default=None,
                        help="sign a browser out after this long without a request (default 30)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default %(default)s)")
    return parser


def settings_from(args: argparse.Namespace) -> ConsoleSettings:
    host, port = split_listen(args.listen)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    tls = ServerTls(args.tls_cert, args.tls_key) if args.tls_cert else ServerTls.from_env()
    idle = args.idle_minutes if args.idle_minutes is not None else idle_minutes_from_env()
    manager, executor = service_addresses(args.manager, args.executor)
    return ConsoleSettings(host, port, manager, executor, read_token(), tls=tls, tls_ca=client_tls_ca(),
                           idle_seconds=idle * 60, allow_public_http=args.allow_public_http)


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _name, address = socket.getaddrinfo(host if host != "localhost" else "127.0.0.1", port,
                                                             type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve(settings: ConsoleSettings, log_level: str) -> None:
    import uvicorn

    from .app import build_app

    sock = bind(settings.host, settings.port)
    # uvicorn logs through the root logger (our key=value format), and only what goes wrong.
    config = uvicorn.Config(build_app(settings), log_config=None, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3, proxy_headers=False, server_header=False,
                            ssl_certfile=str(settings.tls.cert) if settings.tls else None,
                            ssl_keyfile=str(settings.tls.key) if settings.tls else None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        port = sock.getsockname()[1]
        scheme = "https" if settings.tls else "http"
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"{PROGRAM} serving on {shown}:{port} ({scheme}://{shown}:{port}/ ; manager {settings.manager}, "
              f"executor {settings.executor})", flush=True)
    await task
    if not server.started:
        raise OSError(f"could not serve on {settings.host}:{settings.port}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    try:
        settings = settings_from(args)
        asyncio.run(serve(settings, args.log_level))
    except (MissingToken, OSError, ValueError) as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
