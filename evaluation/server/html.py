"""The leaderboard page: a server-rendered table (readable without JavaScript) plus the board's
JSON for the sorting and per-category chart script in ``evaluation/static/leaderboard.js``.
No CDN: everything is served by this server."""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"


@lru_cache(maxsize=1)
def _template() -> Template:
    return Template((TEMPLATES / "leaderboard.html").read_text(encoding="utf-8"))


def _num(value) -> tuple[str, str]:
    """(data-value, shown text) of a score; missing scores show as an en dash and sort last."""
    if isinstance(value, (int, float)):
        return f"{value:.6g}", f"{value:.2f}"
    return "", "&ndash;"


def _row(entry: dict, unranked: bool) -> str:
    e = html.escape
    overall = entry.get("overall") or {}
    per_direction = entry.get("per_direction") or {}
    cells = []
    rank = entry.get("rank")
    cells.append(f'<td class="num" data-value="{rank if rank is not None else ""}">{rank if rank is not None else "&ndash;"}</td>')
    method = e(entry["method"])
    if entry.get("paper_url"):
        method = f'<a href="{e(entry["paper_url"])}" rel="nofollow noopener">{method}</a>'
    cells.append(f"<td>{method}</td>")
    cells.append(f"<td>{e(entry.get('encoder') or '')}</td>")
    cells.append(f"<td>{e(entry.get('supervision') or '')}</td>")
    for value in (overall.get("pck@0.05"), overall.get("pck@0.10"),
                  (per_direction.get("sketch_to_photo") or {}).get("pck@0.10"),
                  (per_direction.get("photo_to_sketch") or {}).get("pck@0.10")):
        data_value, shown = _num(value)
        cells.append(f'<td class="num" data-value="{data_value}">{shown}</td>')
    if entry.get("reported_in_paper"):
        source = '<span class="badge">reported in paper</span>'
    else:
        source = e(entry.get("submitter") or "")
    if unranked:
        source += f' <em>(unranked: {e(entry.get("unranked_reason") or "")})</em>'
    cells.append(f"<td>{source}</td>")
    cells.append(f"<td>{e(entry.get('scorer_version') or '')}</td>")
    date = "2023 (paper)" if entry.get("reported_in_paper") else str(entry.get("created_at") or "")[:10]
    cells.append(f"<td>{e(date)}</td>")
    classes = ["paper" if entry.get("reported_in_paper") else "submitted"] + (["unranked"] if unranked else [])
    return f'<tr class="{" ".join(classes)}" data-id="{e(entry["id"])}">' + "".join(cells) + "</tr>"


def render_leaderboard(board: dict) -> str:
    """HTML of the board (``board`` is the JSON of ``GET /leaderboard``)."""
    rows = "\n".join(_row(entry, False) for entry in board["ranked"])
    unranked = ""
    if board["unranked"]:
        unranked_rows = "\n".join(_row(entry, True) for entry in board["unranked"])
        unranked = ('<h2>Not ranked</h2><p class="sub">Missing or non-finite scores, or scored against other '
                    'annotations.</p><table class="sortable" id="unranked"><thead><tr><th data-type="num">Rank</th>'
                    '<th>Method</th><th>Encoder</th><th>Supervision</th><th class="num" data-type="num">PCK@0.05</th>'
                    '<th class="num" data-type="num">PCK@0.10</th><th class="num" data-type="num">s&rarr;p @0.10</th>'
                    '<th class="num" data-type="num">p&rarr;s @0.10</th><th>Source</th><th>Scorer</th><th>Date</th>'
                    f"</tr></thead><tbody>{unranked_rows}</tbody></table>")
    # JSON inside <script>: "</" must not appear literally (it would close the element).
    data_json = json.dumps(board, allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")
    return _template().substitute(
        split=html.escape(board["split"]), sort_by=html.escape(board["sort_by"]),
        private_note=", hidden: aggregates only" if board["private"] else "",
        scorer_version=html.escape(board["scorer_version"]), rows=rows, unranked_section=unranked,
        data_json=data_json,
    )
