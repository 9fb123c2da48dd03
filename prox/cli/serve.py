"""``prox serve``: run the hot scoring service (uvicorn), or add an API token."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from prox.cli import positive_int

    p = subparsers.add_parser(
        "serve",
        help="run the hot scoring HTTP service",
        description="Serve /v1/score and /v1/events with the @champion (uvicorn).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8080)
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument(
        "--add-token",
        metavar="ROLES",
        help="create a bearer token with ROLES (score,ingest,admin), store its hash, print it once, exit",
    )
    p.add_argument("--label", default="", help="a label stored next to the new token's hash")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prox.cli import UsageError
    from prox.settings import Settings

    if args.add_token:
        from serve.auth import TokenError, new_token

        token_file = Settings.from_env().serve_token_path
        try:
            token = new_token(token_file, args.add_token, args.label)
        except TokenError as exc:
            raise UsageError(f"--add-token: {exc}") from None
        print(token)
        return 0
    import uvicorn

    uvicorn.run(
        "serve.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="info",
    )
    return 0
