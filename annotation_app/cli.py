"""Crowd annotation study: ``init`` registers pairs, keypoints and images in a database;
``serve`` runs the participant page, the participant API and the admin API."""

from __future__ import annotations

import argparse
import json
import os

from psc6k.errors import Psc6kError
from psc6k_web.limits import add_limit_arguments, limits_from_args

HELP = "crowd annotation study: init, serve"
SECTION, ORDER = "build the benchmark", 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{init,serve}", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("init", help="create a study: one task per (pair, keypoint), N slots each",
                       formatter_class=fmt, description="Create a study in a database.")
    p.add_argument("--pairs", required=True, help="CSV with photo,sketch[,class] columns (e.g. test pairs "
                   "from build-pairs, or a test_pairs_ps.csv whose XA/YA become known practice answers)")
    p.add_argument("--keypoints", dest="keypoints_csv", default=None, help="sketch,X,Y CSV from build-keypoints "
                   "(optional when --pairs has XB/YB)")
    p.add_argument("--images", dest="images_root", required=True, help="Sketchy root the CSV paths are relative to")
    p.add_argument("--db", required=True, help="sqlite:///study.db, a file path, or postgresql+psycopg://...")
    p.add_argument("--config", default=None, help="study.toml (texts, Prolific code, lease, practice, catch)")
    p.add_argument("--annotators-per-keypoint", type=int, default=None, help="default 3 (or the config's)")
    p.add_argument("--trials-per-participant", type=int, default=None, help="default 125 (or the config's)")
    p.add_argument("--lease-minutes", type=float, default=None, help="default 60 (or the config's)")
    p.add_argument("--first-click-minutes", type=float, default=None,
                   help="a session without any click after this many minutes gives its slots back "
                        "(default 15, or the config's)")
    p.add_argument("--public-url", default="https://YOUR-HOST",
                   help="where participants reach the server; only used to print the study URL for Prolific")
    p.add_argument("--force", action="store_true", help="replace a study already in the database")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("serve", help="run the web service", formatter_class=fmt,
                       description="Serve the study. The admin token comes from PSC6K_ADMIN_TOKEN.")
    s.add_argument("--db", required=True, help="database URL given to init")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    s.add_argument("--images", default=None, help="override the images root stored at init")
    s.add_argument("--log-level", default="warning")
    s.add_argument("--sqlite-synchronous", choices=["full", "normal"], default="full",
                   help="SQLite only: 'full' fsyncs every click, surviving power loss; 'normal' "
                        "survives a crash of the server (kill -9) but not of the machine, and is faster")
    s.add_argument("--entry-rate-limit", default=None,
                   help="per-client limit of study entries (POST /api/sessions), e.g. '10/minute' or "
                        "'3/second;50/hour' (the limits library's notation); off by default")
    s.add_argument("--rate-limit-storage", default="memory://",
                   help="where the rate-limit counters live: memory:// (per worker) or e.g. redis://host:6379")
    s.add_argument("--trusted-proxies", default=None,
                   help="comma-separated addresses or CIDR networks of your reverse proxies; only requests "
                        "from them have their client address taken from X-Forwarded-For (the rightmost "
                        "entry that is not a trusted proxy). Off by default: the TCP peer is the client")
    add_limit_arguments(s)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return run_init(args) if args.action == "init" else run_serve(args)
    except SQLAlchemyError as exc:  # a --db that is a folder, not a database, unreachable, ...
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Psc6kError(f"--db {args.db}: cannot open the study database ({reason})") from None


def run_init(args: argparse.Namespace) -> int:
    from .config import load_config
    from .study import init_study

    cfg = load_config(args.config, annotators_per_keypoint=args.annotators_per_keypoint,
                      trials_per_participant=args.trials_per_participant, lease_minutes=args.lease_minutes,
                      first_click_minutes=args.first_click_minutes)
    summary = init_study(args.db, args.pairs, args.images_root, cfg, args.keypoints_csv, force=args.force)
    summary["study_url"] = cfg.study_url(args.public_url)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"study created in {args.db}: {summary['pairs']} pairs, {summary['tasks']} tasks, "
          f"{summary['slots']} slots over {summary['categories']} categories; "
          f"{summary['trials_per_participant']} trials per participant -> at least "
          f"{summary['minimum_complete_sessions']} complete sessions.")
    print(f"Prolific study URL (paste it into Prolific; the key= part admits participants):\n  {summary['study_url']}")
    print(f"Prolific completion code: {summary['completion_code']}  (redirect {summary['redirect_url']})")
    if summary["practice_pairs_excluded"]:
        print(f"{summary['practice_pairs_excluded']} pairs were drawn for practice and are not annotated (a practice "
              f"trial shows its answer); give [[practice.items]] from outside the study to annotate every pair.")
    return 0


def serve_settings(args: argparse.Namespace):
    """The settings of every worker process, from the command line (admin token: environment)."""
    from pydantic import ValidationError

    from .db import normalise_url
    from .settings import AnnotationSettings

    try:
        return AnnotationSettings(
            db_url=normalise_url(args.db), image_root=args.images, admin_token=os.environ.get("PSC6K_ADMIN_TOKEN"),
            sqlite_synchronous=args.sqlite_synchronous, entry_rate_limit=args.entry_rate_limit,
            rate_limit_storage=args.rate_limit_storage, trusted_proxies=args.trusted_proxies)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise Psc6kError(f"annotate serve: {problems}") from None


def run_serve(args: argparse.Namespace) -> int:
    import functools

    from psc6k_web.server import serve

    from .app import create_app
    from .service import StudyService

    settings = serve_settings(args)
    limits = limits_from_args(args)
    StudyService.from_settings(settings).close()  # fail here, with a message, rather than in every worker
    if not settings.admin_token:
        print("psc6k annotate serve: PSC6K_ADMIN_TOKEN is not set; the admin API is disabled.")
    print(f"serving on http://{args.host}:{args.port}/ (admin: /admin)")
    common = dict(host=args.host, port=args.port, log_level=args.log_level, limits=limits)
    if args.workers <= 1:
        serve(create_app(settings), **common)
        return 0
    # each worker builds its own app from the same settings (pickled to the spawned process)
    serve(functools.partial(create_app, settings), factory=True, workers=args.workers, **common)
    return 0
