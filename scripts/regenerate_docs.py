"""Regenerate the numbers in the docs that come from a command.

    python scripts/regenerate_docs.py               # run `psc6k demo`, rewrite the marked blocks
    python scripts/regenerate_docs.py --screenshot  # also docs/report_screenshot.png (Chromium)
    python scripts/regenerate_docs.py --check       # exit 1 when a block differs; writes nothing

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in a
Markdown file; everything outside the markers is prose and left alone. The blocks and their source:

- ``docs/demo.md`` ``demo-table``: the leaderboard that ``psc6k demo`` prints (its defaults);
- ``docs/demo.md`` ``baseline-table``: the demo's baseline submissions scored against the
  sample's exact ``test_pairs_ps.csv`` -- the numbers ``psc6k baseline NAME --eval`` prints
  (a baseline's flows depend on the images only, so the demo's submissions are those flows);
- ``docs/demo.md`` ``demo-timings``: the wall-clock times of that run (machine dependent, not tested).

``tests/psc6k/test_demo.py`` compares the first two blocks with a fresh demo run, so a change that moves
a number fails until this script is rerun.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from psc6k.baselines import BASELINES
from psc6k.data import sample_path
from psc6k.demo import format_leaderboard
from psc6k.formats import read_annotations
from psc6k.pck import evaluate
from psc6k.submission import load_submission

REPO = Path(__file__).resolve().parents[1]
DEMO_MD = REPO / "docs" / "demo.md"
SCREENSHOT = REPO / "docs" / "report_screenshot.png"
#: Size of the README / docs/demo.md screenshot of the demo's report (CSS px).
SCREENSHOT_SIZE = (1200, 1700)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"


def read_block(text: str, name: str) -> str:
    """The text between the markers of block ``name`` (without the newlines next to them)."""
    start, end = _markers(name)
    match = re.search(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), text, flags=re.S)
    if match is None:
        raise KeyError(f"no generated block {name!r} ({start} ... {end})")
    return match.group(1)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with block ``name`` replaced by ``body``; KeyError when the markers are missing."""
    read_block(text, name)  # markers present
    start, end = _markers(name)
    pattern = re.escape(start) + r"\n.*?" + re.escape(end)
    return re.sub(pattern, lambda _: f"{start}\n{body}\n{end}", text, count=1, flags=re.S)


def demo_table_block(result: dict) -> str:
    """The leaderboard exactly as ``psc6k demo`` prints it, in a code fence."""
    return "```\n" + format_leaderboard(result["leaderboard"], result.get("human_agreement")) + "\n```"


def baseline_table_block(submissions_dir, sample_root) -> str:
    """Markdown table: each baseline of the demo scored against the sample's exact annotations."""
    ann = read_annotations(Path(sample_root) / "test_pairs_ps.csv")
    lines = ["| baseline | PCK@0.05 | PCK@0.10 | mean error px |", "|---|---|---|---|"]
    for name in BASELINES:
        res = evaluate(ann, load_submission(Path(submissions_dir) / f"baseline-{name}.npz"), n_bootstrap=0)
        lines.append(f"| {name} | {res.overall['pck@0.05']:.2f} | {res.overall['pck@0.10']:.2f} | "
                     f"{res.mean_error_px['overall']:.1f} |")
    return "\n".join(lines)


def timings_block(result: dict) -> str:
    t = result["timings_s"]
    parts = ", ".join(f"{k} {t[k]:.1f} s" for k in ("keypoints", "baselines", "report") if k in t)
    return f"Last measured by `scripts/regenerate_docs.py`: {t['total']:.1f} s for the full demo ({parts})."


def run_demo_command(out: Path) -> dict:
    """``psc6k demo --out OUT --json`` with every other option at its default; its JSON result."""
    proc = subprocess.run([sys.executable, "-m", "psc6k", "demo", "--out", str(out), "--json"],
                          stdout=subprocess.PIPE, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout)


def screenshot(report_html: Path, png: Path) -> None:
    """Chromium (headless, Debian's build) screenshot of the report's first screen."""
    sys.path.insert(0, str(REPO))
    from tests.helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    width, height = SCREENSHOT_SIZE
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(report_html.resolve().as_uri())
        page.screenshot(path=str(png))
        browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a block is stale")
    parser.add_argument("--screenshot", action="store_true", help="also retake docs/report_screenshot.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="psc6k-docs-") as tmp:
        out = Path(tmp) / "demo"
        result = run_demo_command(out)
        blocks = {"demo-table": demo_table_block(result),
                  "baseline-table": baseline_table_block(out / "submissions", sample_path())}
        if not args.check:
            blocks["demo-timings"] = timings_block(result)
        old = DEMO_MD.read_text(encoding="utf-8")
        new = old
        for name, body in blocks.items():
            new = replace_block(new, name, body)
        if args.check:
            stale = [name for name in blocks if read_block(old, name) != read_block(new, name)]
            for name in stale:
                print(f"{DEMO_MD.relative_to(REPO)}: block {name!r} is stale; run scripts/regenerate_docs.py")
            return 1 if stale else 0
        if new != old:
            DEMO_MD.write_text(new, encoding="utf-8")
        print(f"{DEMO_MD.relative_to(REPO)}: {'rewritten' if new != old else 'already up to date'}")
        print(blocks["demo-table"])
        if args.screenshot:
            screenshot(Path(result["report"]), SCREENSHOT)
            print(f"{SCREENSHOT.relative_to(REPO)}: retaken")
    return 0


if __name__ == "__main__":
    sys.exit(main())
