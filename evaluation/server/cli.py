"""Run the PSC6K scoring / leaderboard server (POST /score, POST /submissions, GET /leaderboard).

Without a sub-command: serve. ``psc6k serve token create|list|revoke`` manages submitter tokens
in the leaderboard database (the admin API does the same over HTTP with PSC6K_ADMIN_TOKEN).
See docs/server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from psc6k.data import path_or_sample
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations
from psc6k.text import check_text
from psc6k_web.limits import add_limit_arguments, limits_from_args

from .settings import ENV_ADMIN_TOKEN, MB, ServerSettings

HELP = "run the scoring / leaderboard server"
SECTION, ORDER = "score", 20


DEFAULT_DB = "sqlite:///psc6k_leaderboard.sqlite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", "-a", default=None, metavar="CSV",
                        help="test_pairs_ps.csv or test_pairs_st.csv to score against (required to serve); "
                             "'sample': the bundled sample's")
    parser.add_argument("--db", default=DEFAULT_DB,
                        help="SQLAlchemy URL of the leaderboard; PostgreSQL "
                             "(postgresql+psycopg://user:pw@host/db) for --workers > 1")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--private", action="store_true",
                        help="hidden split: replies carry only aggregates (overall, per direction); "
                             "/score needs a token and counts against its quota")
    parser.add_argument("--split-name", default=None,
                        help="label stored with leaderboard entries (default: 'hidden' with --private, else 'test')")
    parser.add_argument("--max-body-mb", type=float, default=200, help="largest request body (413 beyond)")
    parser.add_argument("--max-decompressed-mb", type=float, default=1024,
                        help="largest submission after gzip / zip decompression (413 beyond)")
    parser.add_argument("--max-flow-side", type=int, default=256, help="largest flow height / width (413 beyond)")
    parser.add_argument("--max-concurrent", type=int, default=2,
                        help="scorings at once per worker (each holds a parsed submission in memory)")
    parser.add_argument("--max-pending", type=int, default=32,
                        help="requests waiting for a scoring slot per worker before 503")
    parser.add_argument("--upload-timeout", type=float, default=300,
                        help="seconds a body may take to arrive in all (408 beyond); uploads never hold a scoring slot")
    parser.add_argument("--upload-idle-timeout", type=float, default=30,
                        help="seconds an upload may pause without sending a byte (408 beyond)")
    parser.add_argument("--max-uploads-per-client", type=int, default=4,
                        help="bodies received at once from one client address (429 beyond)")
    parser.add_argument("--max-uploads", type=int, default=256,
                        help="bodies received at once per worker (503 beyond)")
    parser.add_argument("--daily-quota", type=int, default=5,
                        help="default accepted leaderboard submissions per token per UTC day")
    parser.add_argument("--model-scores", default=None,
                        help="JSON with scores of the model-zoo checkpoints for GET /models "
                             "({model: 'psc6k eval --json' output} or one such output)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    parser.add_argument("--no-seed", action="store_true",
                        help="do not add the paper's published numbers to the leaderboard (never added with --private)")
    parser.add_argument("--trusted-proxies", default=None,
                        help="comma-separated addresses or CIDR networks of your reverse proxies; only "
                             "requests from them have their client address taken from X-Forwarded-For "
                             "(per-client bounds key on it). Off by default: the TCP peer is the client")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_limit_arguments(parser)

    sub = parser.add_subparsers(dest="action", metavar="{token}")
    sub.required = False
    token = sub.add_parser("token", help="manage submitter tokens in the leaderboard database")
    token_sub = token.add_subparsers(dest="token_action", metavar="{create,list,revoke}")
    token_sub.required = True
    create = token_sub.add_parser("create", help="create a token (printed once; only its hash is stored)")
    create.add_argument("name", help="who the token is for")
    create.add_argument("--quota", type=int, default=None, help="daily quota (default: the server's)")
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = token_sub.add_parser("list", help="list tokens")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int, help="token id (see 'token list')")
    for p in (create, listing, revoke):
        p.add_argument("--db", dest="token_db", default=None, help=f"leaderboard URL (default: {DEFAULT_DB})")


def _settings(args) -> ServerSettings:

    if args.annotations is None:
        raise Psc6kError("--annotations is required: the test_pairs_ps.csv to score against "
                         "('--annotations sample' for the bundled sample's)")
    annotations = str(path_or_sample(args.annotations))
    if not os.path.isfile(annotations):
        raise Psc6kError(f"{annotations}: annotations file not found")
    for name in ("max_body_mb", "max_decompressed_mb"):
        if getattr(args, name) <= 0:
            raise Psc6kError(f"--{name.replace('_', '-')} must be > 0")
    if args.upload_timeout <= 0 or args.upload_idle_timeout <= 0:
        raise Psc6kError("--upload-timeout and --upload-idle-timeout must be > 0")
    if args.max_flow_side < 2:
        raise Psc6kError("--max-flow-side must be >= 2")
    if args.max_uploads_per_client < 1 or args.max_uploads < 1:
        raise Psc6kError("--max-uploads-per-client and --max-uploads must be >= 1")
    if args.workers < 1 or args.max_concurrent < 1 or args.max_pending < 0 or args.daily_quota < 0:
        raise Psc6kError("--workers and --max-concurrent must be >= 1, --max-pending and --daily-quota >= 0")
    if args.model_scores and not os.path.isfile(args.model_scores):
        raise Psc6kError(f"{args.model_scores}: --model-scores file not found")
    from pydantic import ValidationError

    try:
        return _server_settings(args, annotations)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise Psc6kError(f"serve: {problems}") from None


def _server_settings(args, annotations: str) -> ServerSettings:
    return ServerSettings(
        annotations=os.path.abspath(annotations), db_url=args.db, private=args.private,
        max_body_bytes=int(args.max_body_mb * MB), max_decompressed_bytes=int(args.max_decompressed_mb * MB),
        max_flow_side=args.max_flow_side,
        max_concurrent_scoring=args.max_concurrent, max_pending_scoring=args.max_pending,
        upload_timeout_s=args.upload_timeout, upload_idle_timeout_s=args.upload_idle_timeout,
        max_uploads_per_client=args.max_uploads_per_client, max_uploads=args.max_uploads,
        daily_quota=args.daily_quota, model_scores=os.path.abspath(args.model_scores) if args.model_scores else None,
        n_bootstrap=args.bootstrap, split_name=args.split_name or ("hidden" if args.private else "test"),
        seed_published=not args.no_seed, trusted_proxies=args.trusted_proxies,
        admin_token=os.environ.get(ENV_ADMIN_TOKEN),
    )


def _engine(url: str):
    from . import db
    try:
        engine = db.make_engine(url)
        db.Base.metadata.create_all(engine)
    except Exception as exc:  # bad URL, server down, missing driver
        raise Psc6kError(f"cannot open the leaderboard database {url!r}: {exc}") from None
    return engine


def _run_token(args) -> int:
    from . import db
    engine = _engine(args.token_db or args.db)
    if args.token_action == "create":
        if not args.name.strip():
            raise Psc6kError("token name must not be blank")
        if args.quota is not None and args.quota < 0:
            raise Psc6kError("--quota must be >= 0")
        token, clear = db.create_token(engine, check_text(args.name.strip(), "name")[:200], args.quota)
        if args.json:
            print(json.dumps({"id": token.id, "name": token.name, "token": clear, "daily_quota": token.daily_quota}))
        else:
            print(f"token {token.id} for {token.name!r} (shown once, store it now):\n{clear}")
        return 0
    if args.token_action == "list":
        rows = [{"id": t.id, "name": t.name, "prefix": t.prefix, "daily_quota": t.daily_quota,
                 "created_at": t.created_at.isoformat(timespec="seconds"),
                 "revoked_at": t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else None}
                for t in db.list_tokens(engine)]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for r in rows:
                state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
                quota = r["daily_quota"] if r["daily_quota"] is not None else "default"
                print(f"{r['id']:>4}  {r['prefix']}...  {r['name']:<30} quota {quota:<8} {state}")
        return 0
    token = db.revoke_token(engine, args.id)
    if token is None:
        raise Psc6kError(f"no token with id {args.id}")
    print(f"token {token.id} ({token.name!r}) revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "token":
        return _run_token(args)

    from psc6k_web.server import serve

    from . import db
    from .seed import seed_entries
    limits = limits_from_args(args)
    settings = _settings(args)
    if args.workers > 1 and settings.db_url.startswith("sqlite"):
        print("psc6k serve: warning: several workers on SQLite serialise every write; use PostgreSQL "
              "(--db postgresql+psycopg://...) for a multi-worker deployment", file=sys.stderr)
    # Fail fast on bad annotations and create / seed the tables once, before workers start.
    read_annotations(settings.annotations)
    try:
        engine = db.make_engine(settings.db_url)
        db.init_db(engine, seed_entries(settings.split_name) if settings.wants_seed() else [])
        engine.dispose()
    except Psc6kError:
        raise
    except Exception as exc:
        raise Psc6kError(f"cannot open the leaderboard database {settings.db_url!r}: {exc}") from None
    from .routers.meta import load_model_scores
    load_model_scores(settings.model_scores, [])  # a bad file fails here, not in every worker's start-up
    if not settings.admin_token:
        print(f"psc6k serve: {ENV_ADMIN_TOKEN} is not set: the admin API is off (create tokens with "
              "'psc6k serve token create NAME')", file=sys.stderr)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, limits=limits)
    if args.workers == 1:
        from .app import create_app
        serve(create_app(settings), **common)
    else:
        os.environ.update(settings.to_env())
        serve("evaluation.server.app:app_from_env", factory=True, workers=args.workers, **common)
    return 0
