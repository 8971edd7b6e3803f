"""`metricfold serve`: the web page and the read-only JSON API over Redis (needs the `serve` extra: Starlette and
uvicorn), with an optional bearer token and HTTPS."""

from __future__ import annotations

import argparse
import os

from consumer.cli.options import TOKEN_OPTIONS, Subcommands, add_connection_options, refuse_secret_options
from schemas.errors import ConfigError
from schemas.settings import Settings


def add_parsers(subparsers: Subcommands) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="the web page (runs table with pinned summary columns, run pages, live updates) and the JSON API",
        description="Serve the runs page, the run page and the read-only JSON API (/api/openapi.json) from Redis, with "
        "live updates pushed from the consumer's pub/sub notices, and request metrics at /metrics (Prometheus). "
        "Binds 127.0.0.1 by default. Redis credentials and TLS "
        "come from METRICFOLD_REDIS_USERNAME / METRICFOLD_REDIS_PASSWORD[_FILE] / METRICFOLD_REDIS_CA_CERT (use the "
        "read-only ACL user metricfold-reader, see deploy/redis/README.md). With --token-file or "
        "METRICFOLD_SERVE_TOKEN every request needs 'Authorization: Bearer <token>' (a browser opens a page once "
        "with ?token=<token> and gets a cookie). With --tls-cert and --tls-key it speaks HTTPS.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0: any free port)")
    serve.add_argument(
        "--token-file", metavar="PATH", help="require this bearer token (a file with one line; METRICFOLD_SERVE_TOKEN_FILE, "
        "or the token itself in METRICFOLD_SERVE_TOKEN)"
    )
    serve.add_argument("--tls-cert", metavar="PATH", help="serve HTTPS with this certificate (PEM, the chain after it; "
                       "METRICFOLD_SERVE_TLS_CERT); needs --tls-key")
    serve.add_argument("--tls-key", metavar="PATH", help="the certificate's private key (PEM, unencrypted; "
                       "METRICFOLD_SERVE_TLS_KEY)")
    refuse_secret_options(serve, TOKEN_OPTIONS)
    serve.add_argument("--redis-username", metavar="USER", help="Redis ACL user (METRICFOLD_REDIS_USERNAME; password only from "
                       "METRICFOLD_REDIS_PASSWORD or the file METRICFOLD_REDIS_PASSWORD_FILE names)")
    serve.add_argument("--access-log", action="store_true", help="log every request (a ?token= value shows as ***)")
    add_connection_options(serve)
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("`metricfold serve` needs Starlette and uvicorn: pip install 'metricfold[serve]'") from None
    from consumer.web.server import check_tls_files, load_token, serve

    settings = Settings.from_env(
        kafka=args.kafka, redis=args.redis, topic=args.topic, namespace=args.namespace, group=args.group,
        redis_username=args.redis_username,
    )
    token = load_token(args.token_file or os.environ.get("METRICFOLD_SERVE_TOKEN_FILE") or None)
    tls_cert = args.tls_cert or os.environ.get("METRICFOLD_SERVE_TLS_CERT") or None
    tls_key = args.tls_key or os.environ.get("METRICFOLD_SERVE_TLS_KEY") or None
    check_tls_files(tls_cert, tls_key)
    return serve(settings, host=args.host, port=args.port, token=token, access_log=args.access_log,
                 tls_cert=tls_cert, tls_key=tls_key)
