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


def _source(entry: dict) -> str:
    """Second line of the method cell: the citation of a published number, or who submitted when."""
    e = html.escape
    citation = entry.get("citation")
    if entry.get("reported_in_paper") and citation:
        paper = citation.get("paper", "")
        short = paper.split(",")[0] if "," in paper and not paper.startswith("Lu,") else "PSC6K paper"
        return (f'<span title="{e(paper)}">{e(short)}</span> &middot; {e(citation.get("table", ""))} &middot; '
                f'row &ldquo;{e(citation.get("row", ""))}&rdquo;')
    who = entry.get("submitter") or "submitted"
    return (f"{e(who)} &middot; {e(str(entry.get('created_at') or '')[:10])} &middot; scorer "
            f"{e(entry.get('scorer_version') or '')}")


def _badge(entry: dict) -> str:
    if entry.get("badge") == "reported" or entry.get("reported_in_paper"):
        return '<span class="badge reported">reported</span>'
    return '<span class="badge verified">verified here</span>'


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
    note = f' <em>(unranked: {e(entry.get("unranked_reason") or "")})</em>' if unranked else ""
    cells.append(f'<td class="method" data-value="{e(entry["method"])}">{method}{note}<span class="src">{_source(entry)}</span></td>')
    cells.append(f"<td>{e(entry.get('supervision') or '')}</td>")
    cells.append(f'<td class="nowrap">{e(entry.get("encoder") or "")}</td>')
    for value in (overall.get("pck@0.05"), overall.get("pck@0.10"),
                  (per_direction.get("sketch_to_photo") or {}).get("pck@0.10"),
                  (per_direction.get("photo_to_sketch") or {}).get("pck@0.10")):
        data_value, shown = _num(value)
        cells.append(f'<td class="num" data-value="{data_value}">{shown}</td>')
    cells.append(f"<td>{_badge(entry)}</td>")
    classes = ["paper" if entry.get("reported_in_paper") else "submitted"] + (["unranked"] if unranked else [])
    return f'<tr class="{" ".join(classes)}" data-id="{e(entry["id"])}">' + "".join(cells) + "</tr>"


_HEAD = ('<thead><tr><th data-type="num" class="num rank">#</th><th data-type="text">Method <small>and source</small></th>'
         '<th data-type="text">Setting</th><th data-type="text">Encoder</th>'
         '<th class="num" data-type="num">PCK@0.05</th><th class="num" data-type="num">PCK@0.10</th>'
         '<th class="num" data-type="num">s&rarr;p <small>@0.10</small></th>'
         '<th class="num" data-type="num">p&rarr;s <small>@0.10</small></th><th data-type="text">Badge</th></tr></thead>')


def _table(table_id: str, entries: list[dict]) -> str:
    rows = "\n".join(_row(entry, False) for entry in entries)
    return f'<div class="table-wrap"><table class="sortable" id="{table_id}">{_HEAD}<tbody>{rows}</tbody></table></div>'


def _protocol_items(protocol: dict) -> str:
    e = html.escape
    labels = (("split", "split"), ("threshold_basis", "threshold"), ("resolution", "resolution"),
              ("averaging", "averaging"))
    return "".join(f"<dt>{label}</dt><dd>{e(str(protocol[key]))}</dd>" for key, label in labels if protocol.get(key))


#: (view, protocol) groups of published numbers not ranked here, in page order
_GROUPS = (
    ("main", "psc6k-test", "published-psc6k", "Published on the full PSC6K test set &mdash; not ranked here",
     "This server does not hold the full PSC6K test set, so these numbers are not comparable with its ranking."),
    ("ablation", "psc6k-test", "published-ablations", "Ablations &mdash; PSC6K paper, Tables 2, 3 and 5",
     "Variants of PSCNet (ResNet-18) on the PSC6K protocol: a separate view, never ranked."),
    ("main", "sketchfusion-split", "published-sketchfusion",
     "Other protocol &mdash; SketchFusion (CVPR 2025), Table 4: different split",
     "Evaluated on 20 pairs per category after training on the first 30 pairs per category of the PSC6K test "
     "CSV; never ranked with PSC6K-protocol numbers. (Its rows for WeakAlign and WarpC quote the PSC6K paper.)"),
)


def _published_sections(entries: list[dict]) -> str:
    parts = []
    used = set()
    for view, protocol_id, table_id, title, text in _GROUPS:
        group = [x for x in entries if x.get("view", "main") == view and x.get("protocol_id") == protocol_id]
        # shown best first (by PCK@0.05, then @0.10), but not ranked: no rank numbers
        group.sort(key=lambda x: (-((x.get("overall") or {}).get("pck@0.05") or 0.0),
                                  -((x.get("overall") or {}).get("pck@0.10") or 0.0)))
        if not group:
            continue
        used.update(x["id"] for x in group)
        proto = group[0].get("protocol") or {}
        parts.append(f'<section class="published-section" id="{table_id}-section"><h2>{title}</h2>'
                     f'<p class="sub">{text}</p><dl class="proto">{_protocol_items(proto)}</dl>'
                     f"{_table(table_id, group)}</section>")
    rest = [x for x in entries if x["id"] not in used]
    if rest:
        parts.append('<section class="published-section"><h2>Other published numbers</h2>'
                     f'{_table("published-other", rest)}</section>')
    return "\n".join(parts)


def render_leaderboard(board: dict) -> str:
    """HTML of the board (``board`` is the JSON of ``GET /leaderboard``)."""
    rows = "\n".join(_row(entry, False) for entry in board["ranked"])
    unranked = ""
    if board["unranked"]:
        unranked_rows = "\n".join(_row(entry, True) for entry in board["unranked"])
        unranked = ('<h2>Not ranked</h2><p class="sub">Missing or non-finite scores, or scored against other '
                    f'annotations.</p><div class="table-wrap"><table class="sortable" id="unranked">{_HEAD}'
                    f"<tbody>{unranked_rows}</tbody></table></div>")
    # JSON inside <script>: "</" must not appear literally (it would close the element).
    data_json = json.dumps(board, allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")
    protocol = board.get("protocol") or {}
    return _template().substitute(
        split=html.escape(board["split"]), sort_by=html.escape(board["sort_by"]),
        private_note=", hidden: aggregates only" if board["private"] else "",
        scorer_version=html.escape(board["scorer_version"]), rows=rows, unranked_section=unranked,
        published_sections=_published_sections(board.get("published") or []),
        protocol_name=html.escape(protocol.get("name", board.get("protocol_id", ""))),
        protocol_items=_protocol_items(protocol), data_json=data_json,
    )
