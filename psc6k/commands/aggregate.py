"""Aggregate raw crowd clicks into PSC6K ground truth with the 3-sigma rule (SPEC §4, A.2).

Writes DIR/test_pairs_ps.csv, DIR/test_pairs_st.csv and DIR/aggregate_report.json, and prints
the rejected fraction, keypoints left with fewer than 2 clicks and the human agreement."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import Psc6kError
from psc6k.jsonsafe import json_safe as _json_safe

HELP = "aggregate crowd clicks with the 3-sigma rule into PSC6K CSVs"
SECTION, ORDER = "build the benchmark", 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clicks", help="raw clicks CSV (participant,photo,sketch,keypoint,x,y,rt_ms,created_at)")
    parser.add_argument("--out", required=True, help="output folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--keypoints", help="sketch,X,Y CSV (psc6k build-keypoints): the sketch keypoints XB,YB")
    src.add_argument("--template", "--annotations-template", dest="template",
                     help="an existing test_pairs_ps/st.csv giving pairs, class and sketch keypoints")
    parser.add_argument("--pairs", help="photo,sketch[,class] CSV: pair order and class "
                        "(default: the template's pairs, else the clicks' pairs sorted)")
    parser.add_argument("--n-sigma", type=float, default=3.0, help="outlier threshold mu + n_sigma * sigma")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from psc6k.aggregate import aggregate_clicks, human_agreement
    from psc6k.formats import (read_annotations, read_clicks, read_keypoints_csv,
                               read_pair_list, write_test_pairs_ps, write_test_pairs_st)

    clicks = read_clicks(args.clicks)
    n_read = len(clicks)
    drop = np.zeros(n_read, bool)
    if "excluded" in clicks.columns:
        drop |= clicks["excluded"].astype(str).str.strip().isin(["1", "true", "True"]).to_numpy()
    if "kind" in clicks.columns:
        drop |= (clicks["kind"].astype(str).str.strip() == "catch").to_numpy()
    clicks = clicks[~drop].reset_index(drop=True)
    if not len(clicks):
        raise Psc6kError(f"{args.clicks}: no clicks to aggregate")

    template = read_annotations(args.template) if args.template else None
    categories = template.categories if template is not None else None
    if args.pairs:
        plist = read_pair_list(args.pairs)
        photo, sketch, categories = list(plist.photo), list(plist.sketch), plist.categories
    elif template is not None:
        photo, sketch = list(template.photo), list(template.sketch)
    else:
        keys = sorted(set(zip(clicks["photo"], clicks["sketch"])))
        photo, sketch = [k[0] for k in keys], [k[1] for k in keys]

    if template is not None:
        tindex = template.index()
        missing = [(p, s) for p, s in zip(photo, sketch) if (p, s) not in tindex]
        if missing:
            raise Psc6kError(f"{args.template}: pair (photo={missing[0][0]!r}, sketch={missing[0][1]!r}) "
                             f"is not in the template ({len(missing)} pairs missing)")
        sketch_kps = np.stack([template.sketch_kps[tindex[k]] for k in zip(photo, sketch)])
    else:
        kp = read_keypoints_csv(args.keypoints)
        missing = [s for s in sketch if s not in kp]
        if missing:
            raise Psc6kError(f"{args.keypoints}: no keypoints for sketch {missing[0]!r} "
                             f"({len(missing)} sketches missing)")
        sketch_kps = np.stack([kp[s] for s in sketch]) if sketch else np.zeros((0, NUM_KEYPOINTS, 2))

    wanted = set(zip(photo, sketch))
    outside = ~np.array([(p, s) in wanted for p, s in zip(clicks["photo"], clicks["sketch"])], bool)
    agg = aggregate_clicks(clicks, n_sigma=args.n_sigma)
    pairs = agg.complete_pairs(photo, sketch, sketch_kps, categories=categories)
    ann, complete = pairs.annotations, pairs.complete
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_test_pairs_ps(ann, out / "test_pairs_ps.csv")
    write_test_pairs_st(ann, out / "test_pairs_st.csv")

    agreement = human_agreement(clicks, kept=agg.kept)
    few = agg.keypoints_with_fewer_than(2)
    report = agg.summary()
    report.update({
        "clicks_read": n_read, "clicks_dropped_excluded_or_catch": int(drop.sum()),
        "clicks_of_pairs_not_listed": int(outside.sum()),
        "pairs_listed": len(photo), "pairs_written": int(complete.sum()),
        "pairs_not_written": pairs.incomplete(),
        "keypoints_fewer_than_2_kept_list": few[["photo", "sketch", "keypoint", "n_kept"]].to_dict(orient="records"),
        "human_agreement": agreement,
        "outputs": [str(out / "test_pairs_ps.csv"), str(out / "test_pairs_st.csv")],
    })
    report = _json_safe(report)
    (out / "aggregate_report.json").write_text(json.dumps(report, indent=2, default=int), encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2, default=int))
        return 0
    print(f"clicks: {agg.n_clicks} aggregated ({int(drop.sum())} excluded/catch dropped) over {len(agg.keypoints)} keypoints")
    print(f"rejected as outliers (d > mu + {args.n_sigma:g} sigma = {agg.threshold:.1f} px^2): "
          f"{agg.n_rejected} = {100 * agg.rejected_fraction:.2f}% (paper: 0.74%)")
    print(f"keypoints with fewer than 2 kept clicks: {len(few)}"
          f" ({int((agg.keypoints['n_kept'] == 0).sum())} with none)")
    a = agreement
    print(f"human agreement (each click vs centroid of the others): PCK@0.05 {a['pck@0.05']:.2f}%  "
          f"PCK@0.10 {a['pck@0.10']:.2f}%  mean {a['mean_error_px']:.2f} px over {a['n_clicks']} clicks")
    if outside.any():
        print(f"warning: {int(outside.sum())} clicks belong to pairs not in the pair list; they are not written")
    print(f"pairs written: {int(complete.sum())} of {len(photo)} -> {out}/test_pairs_ps.csv, test_pairs_st.csv"
          + (f" ({int((~complete).sum())} incomplete, listed in aggregate_report.json)" if (~complete).any() else ""))
    return 0
