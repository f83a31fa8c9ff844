"""Screenshots of the leaderboard page in Chromium at 1280 and 1920 px, and the layout numbers.

Two boards:

* ``server_leaderboard_<width>.png``: a server holding PSC6K-shaped annotations (6,250 random
  pairs over the 125 Sketchy categories, so its protocol is the full test set's): the paper's
  main numbers are ranked beside two entries scored here; ablations and SketchFusion's rows are
  listed apart; the per-category chart shows 125 categories.
* ``server_leaderboard_sample_1280.png``: a server on the bundled 40-pair sample: nothing
  published is ranked beside its entry.

Prints, per page and width: the page's scroll width against the viewport (no sideways scrolling
when equal), the table's and the chart's widths, and the height of one chart row.

Usage: python docs/tools/leaderboard_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def _board(tmp: Path, ann, submissions):
    import httpx

    from evaluation.server import db
    from evaluation.server.app import create_app
    from evaluation.server.settings import ServerSettings
    from psc6k.formats import write_test_pairs_ps
    from psc6k.submission import save_submission

    csv = tmp / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, csv)
    app = create_app(ServerSettings(annotations=str(csv), db_url=f"sqlite:///{tmp / 'lb.sqlite'}", n_bootstrap=100))
    _, token = db.create_token(app.state.psc6k.engine, "demo-team", daily_quota=100)
    return app, token, [(params, save_submission(sub, tmp / f"{i}.npz").read_bytes())
                        for i, (params, sub) in enumerate(submissions)], httpx


def _shoot(browser, app, token, uploads, httpx, shots):
    from evaluation.server.testdata import serve_in_thread

    with serve_in_thread(app) as base:
        for params, body in uploads:
            r = httpx.post(base + "/submissions", params=params, content=body, timeout=300,
                           headers={"content-type": "application/octet-stream", "authorization": f"Bearer {token}"})
            r.raise_for_status()
        for width, path in shots:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(base + "/leaderboard.html")
            m = page.evaluate("""() => ({scroll: document.documentElement.scrollWidth,
                client: document.documentElement.clientWidth,
                table: document.querySelector('#board').getBoundingClientRect().width,
                wrap: Math.max(...[...document.querySelectorAll('.table-wrap')].map(w => w.scrollWidth - w.clientWidth)),
                chart: document.querySelector('#chart').getBoundingClientRect().width,
                rows: document.querySelectorAll('#chart .cat').length,
                row_h: (document.querySelector('#chart .cat') || {getBoundingClientRect: () => ({height: 0})})
                        .getBoundingClientRect().height})""")
            print(f"{path.name}: viewport {width} px, page scroll width {m['scroll']} (client {m['client']}), "
                  f"table {m['table']:.0f} px (widest table overflows its box by {m['wrap']} px), chart {m['chart']:.0f} px wide with {m['rows']} category rows "
                  f"of {m['row_h']:.0f} px")
            page.screenshot(path=str(path), full_page=True)
            page.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "screenshots"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    from psc6k.testing import make_annotations, make_keypoint_submission
    from psc6k.data import sample_path
    from psc6k.formats import read_annotations

    full = make_annotations(125, 10, 5)
    sample = read_annotations(sample_path() / "test_pairs_ps.csv")
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        tmp = Path(tmp)
        (tmp / "full").mkdir()
        (tmp / "sample").mkdir()
        board = _board(tmp / "full", full, [
            ({"method": "My method", "encoder": "ResNet-50", "supervision": "retrain",
              "paper_url": "https://example.org/paper"}, make_keypoint_submission(full, noise_px=9, seed=3)),
            ({"method": "Zero-shot features", "supervision": "transfer"}, make_keypoint_submission(full, noise_px=16)),
        ])
        _shoot(browser, *board, [(1280, out / "server_leaderboard_1280.png"), (1920, out / "server_leaderboard_1920.png")])
        board = _board(tmp / "sample", sample, [({"method": "noisy oracle"}, make_keypoint_submission(sample, 12))])
        _shoot(browser, *board, [(1280, out / "server_leaderboard_sample_1280.png")])
        browser.close()


if __name__ == "__main__":
    main()
