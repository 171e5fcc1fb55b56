"""`cvae-study predict RESULTS_DIR --data ROOT --out DIR [...]`: the lab's test phase with a study's winner.

Takes the checkpoint of THE ranking's best run (study.tables.ranking: the epoch its score comes
from, as best.toml and the report name it) and hands it to `python -m cvae.predict`, whose flags it
shares; `--checkpoint PATH` instead of RESULTS_DIR predicts with any run's checkpoint. It reads the
results only (docs/ARCHITECTURE.md, contract 5), so it works for a running, interrupted or finished study.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

from study.analyze import read_study
from study.tables import load_tables, ranking, winner
from study.place import SUBMISSION_SCORE, PlaceError, existing_place


def best_checkpoint(where: str) -> tuple[Path, str]:
    """The ranked best run's checkpoint of a study (a folder or its URI) and a line saying whose it is.

    PlaceError when there is no such study, no trial has a score yet, or Tune did not keep that checkpoint.
    """
    place = existing_place(where)
    info = read_study(place.exp_dir)
    best = winner(ranking(load_tables(place.exp_dir), info))
    if best is None:
        raise PlaceError(f"{place.shown()}: no trial has a {info.metric} yet, so there is no best checkpoint; "
                         "pass --checkpoint PATH for any run's")
    run = (f"best run: trial {best['best_trial']} ({best['setting']}, seed {best['best_seed']}), {info.metric} "
           f"{best['best_value']:.4g} at epoch {best['best_epoch']}")
    if best["best_checkpoint"] is None:
        raise PlaceError(f"{place.shown()}: {run}, but Tune did not keep that epoch's checkpoint; "
                         "pass --checkpoint PATH for another one")
    return place.exp_dir / best["best_checkpoint"], run


def main(argv: Sequence[str] | None = None) -> int:
    from cvae.predict import SCORE, parser, run

    p = parser(prog="cvae-study predict", checkpoint_required=False)
    p.description = ("Predict the lab's test split with a study's ranked best checkpoint (or --checkpoint PATH): "
                     "submission.csv, pred_seq<i>.gif/.png, and the score where the split has its ground truth.")
    p.add_argument("results_dir", nargs="?", help="the study's results folder, e.g. results/kl, or its URI")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if (args.results_dir is None) == (args.checkpoint is None):
        print("error: give a study's RESULTS_DIR or --checkpoint PATH (one of them)", file=sys.stderr)
        return 2
    exp_dir = None
    if args.results_dir is not None:
        try:
            ckpt, line = best_checkpoint(args.results_dir)
        except PlaceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(line)
        args.checkpoint = str(ckpt)
        exp_dir = ckpt.parents[1]
    code = run(args)
    score = Path(args.out) / SCORE
    if code == 0 and exp_dir is not None and score.is_file():
        # beside the study's results, so its report shows the test score next to val/psnr
        shutil.copyfile(score, exp_dir / SUBMISSION_SCORE)
        print(f"  the study's report shows this score beside val/psnr ({exp_dir / SUBMISSION_SCORE}; "
              f"`cvae-study report {args.results_dir}` rebuilds it)")
    return code


if __name__ == "__main__":
    sys.exit(main())
