"""Crowd annotation study: ``init`` registers pairs, keypoints and images in a database;
``serve`` runs the participant page, the participant API and the admin API."""

from __future__ import annotations

import argparse
import json
import os

from psc6k.errors import Psc6kError

HELP = "crowd annotation study: init, serve"
SECTION, ORDER = "build the benchmark", 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{init,serve}", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("init", help="create a study: one task per (pair, keypoint), N slots each",
                       formatter_class=fmt, description="Create a study in a database.")
    p.add_argument("--pairs", required=True, help="CSV with photo,sketch[,class] columns (e.g. test pairs "
                   "from build-pairs, or a test_pairs_ps.csv whose XA/YA become known practice answers)")
    p.add_argument("--keypoints", default=None, help="sketch,X,Y CSV from build-keypoints "
                   "(optional when --pairs has XB/YB)")
    p.add_argument("--images", required=True, help="Sketchy root the CSV paths are relative to")
    p.add_argument("--db", required=True, help="sqlite:///study.db, a file path, or postgresql+psycopg://...")
    p.add_argument("--config", default=None, help="study.toml (texts, Prolific code, lease, practice, catch)")
    p.add_argument("--annotators-per-keypoint", type=int, default=None, help="default 3 (or the config's)")
    p.add_argument("--trials-per-participant", type=int, default=None, help="default 125 (or the config's)")
    p.add_argument("--lease-minutes", type=float, default=None, help="default 60 (or the config's)")
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
    s.add_argument("--sqlite-synchronous", choices=["full", "normal"], default=None,
                   help="SQLite only: 'full' (default) fsyncs every click, surviving power loss; 'normal' "
                        "survives a crash of the server (kill -9) but not of the machine, and is faster")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _run(args)
    except SQLAlchemyError as exc:  # a --db that is a folder, not a database, unreachable, ...
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Psc6kError(f"--db {args.db}: cannot open the study database ({reason})") from None


def _run(args: argparse.Namespace) -> int:
    if args.action == "init":
        from .config import load_config
        from .study import init_study

        cfg = load_config(args.config, annotators_per_keypoint=args.annotators_per_keypoint,
                          trials_per_participant=args.trials_per_participant, lease_minutes=args.lease_minutes)
        summary = init_study(args.db, args.pairs, args.images, cfg, args.keypoints, force=args.force)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"study created in {args.db}: {summary['pairs']} pairs, {summary['tasks']} tasks, "
                  f"{summary['slots']} slots over {summary['categories']} categories; "
                  f"{summary['trials_per_participant']} trials per participant -> at least "
                  f"{summary['minimum_complete_sessions']} complete sessions.")
            print(f"Prolific completion code: {summary['completion_code']}  (redirect {summary['redirect_url']})")
        return 0

    import uvicorn

    from .db import normalise_url
    from .service import ApiError, StudyService

    url = normalise_url(args.db)
    try:  # fail here, with a message, rather than in every worker
        StudyService(url, image_root=args.images).close()
    except ApiError as exc:
        raise Psc6kError(exc.detail) from None
    os.environ["PSC6K_ANNOT_DB"] = url
    if args.sqlite_synchronous:
        os.environ["PSC6K_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    if args.images:
        os.environ["PSC6K_ANNOT_IMAGES"] = args.images
    if not os.environ.get("PSC6K_ADMIN_TOKEN"):
        print("psc6k annotate serve: PSC6K_ADMIN_TOKEN is not set; the admin API is disabled.")
    print(f"serving on http://{args.host}:{args.port}/ (admin: /admin)")
    if args.workers <= 1:
        uvicorn.run("annotation_app.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                    log_level=args.log_level)
        return 0
    from ._server import run_workers

    run_workers("annotation_app.app:create_app_from_env", host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level)
    return 0
