"""Aggregate raw crowd clicks into PSC6K ground truth with the 3-sigma rule (SPEC §4, A.2).

Writes DIR/test_pairs_ps.csv, DIR/test_pairs_st.csv and DIR/aggregate_report.json, and prints
the rejected fraction, keypoints left with fewer than 2 clicks and the human agreement."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from psc6k import NUM_KEYPOINTS
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_clicks, read_keypoints_csv, read_pair_list
from psc6k.groundtruth import PS_CSV, REPORT_JSON, ST_CSV, counted_clicks, ground_truth_from_clicks

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
    clicks = read_clicks(args.clicks)
    counted, _ = counted_clicks(clicks)
    if not len(counted):
        raise Psc6kError(f"{args.clicks}: no clicks to aggregate")
    photo, sketch, sketch_kps, categories = _pairs_and_sketch_keypoints(args, counted)
    gt = ground_truth_from_clicks(clicks, photo, sketch, sketch_kps, categories=categories, n_sigma=args.n_sigma)
    out = Path(args.out)
    gt.write(out)
    report, agg = gt.report, gt.aggregate
    if args.json:
        print(gt.report_json())
        return 0
    dropped, outside = report["clicks_dropped_excluded_or_catch"], report["clicks_of_pairs_not_listed"]
    print(f"clicks: {agg.n_clicks} aggregated ({dropped} excluded/catch dropped) over {len(agg.keypoints)} keypoints")
    print(f"rejected as outliers (d > mu + {args.n_sigma:g} sigma = {agg.threshold:.1f} px^2): "
          f"{agg.n_rejected} = {100 * agg.rejected_fraction:.2f}% (paper: 0.74%)")
    print(f"keypoints with fewer than 2 kept clicks: {report['keypoints_fewer_than_2_kept']}"
          f" ({report['keypoints_without_kept_click']} with none)")
    a = report["human_agreement"]
    print(f"human agreement (each click vs centroid of the others): PCK@0.05 {a['pck@0.05']:.2f}%  "
          f"PCK@0.10 {a['pck@0.10']:.2f}%  mean {a['mean_error_px']:.2f} px over {a['n_clicks']} clicks")
    if outside:
        print(f"warning: {outside} clicks belong to pairs not in the pair list; they are not written")
    n_left = len(report["pairs_not_written"])
    print(f"pairs written: {report['pairs_written']} of {report['pairs_listed']} -> {out}/{PS_CSV}, {ST_CSV}"
          + (f" ({n_left} incomplete, listed in {REPORT_JSON})" if n_left else ""))
    return 0


def _pairs_and_sketch_keypoints(args: argparse.Namespace, counted):
    """The pairs to write, in order, their sketch keypoints ``[N, 8, 2]`` and the category list,
    from ``--pairs`` / ``--template`` / ``--keypoints`` (else the counted clicks' pairs, sorted)."""
    template = read_annotations(args.template) if args.template else None
    categories = template.categories if template is not None else None
    if args.pairs:
        plist = read_pair_list(args.pairs)
        photo, sketch, categories = list(plist.photo), list(plist.sketch), plist.categories
    elif template is not None:
        photo, sketch = list(template.photo), list(template.sketch)
    else:
        keys = sorted(set(zip(counted["photo"], counted["sketch"])))
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
    return photo, sketch, sketch_kps, categories
