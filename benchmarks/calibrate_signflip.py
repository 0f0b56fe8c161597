"""Calibration of the sign-flip step-down rank test (`intrinsic.rank.signflip`): the issue's "calibration plot".

Prints and writes (to --out, default runs/calibrate-signflip):
- the false-positive rate of "rank >= 1" on pure-noise fold means, per noise type (isotropic,
  anisotropic with random 1/i row and column covariances, Student-t with 5 df) and shape, with
  its binomial standard error, against the nominal alpha;
- the power curve: P(rank == r) and the mean rank on a planted rank-r signal versus SNR (the
  signal's singular values in units of the detection threshold (m n)^(1/4) sigma_G, from 1 down
  to 0.7 of that), per shape;
- calibration.json and calibration.png (FPR bars with alpha and alpha + 2 SE; power curves).

Run: python benchmarks/calibrate_signflip.py [--reps 400] [--power-reps 60] [--folds 8] [--out DIR]
CPU, about a minute with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_signflip import noise_folds, planted_folds  # noqa: E402  the same generators as the tests

from intrinsic.rank.signflip import ALPHA, sign_flip_test  # noqa: E402

SHAPES = ((16, 12), (40, 24), (96, 64))
KINDS = ("iso", "aniso", "t5")
SNRS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def fpr(kind: str, shape, K: int, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ranks = np.array([sign_flip_test(noise_folds(kind, K, *shape, rng), seed=i).rank for i in range(reps)])
    p = float(np.mean(ranks >= 1))
    return {"kind": kind, "shape": list(shape), "folds": K, "reps": reps, "fpr": p,
            "se": float(np.sqrt(ALPHA * (1 - ALPHA) / reps)), "p_rank_ge_2": float(np.mean(ranks >= 2))}


def power_curve(shape, K: int, r: int, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    exact, mean = [], []
    for snr in SNRS:
        ranks = np.array([sign_flip_test(planted_folds(K, *shape, r, snr, rng), seed=i).rank for i in range(reps)])
        exact.append(float(np.mean(ranks == r)))
        mean.append(float(ranks.mean()))
    return {"shape": list(shape), "folds": K, "rank": r, "reps": reps, "snr": list(SNRS), "p_exact": exact,
            "mean_rank": mean}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rows = result["fpr"]
    labels = [f"{x['kind']}\n{x['shape'][0]}x{x['shape'][1]}" for x in rows]
    a.bar(range(len(rows)), [x["fpr"] for x in rows], yerr=[x["se"] for x in rows], color="tab:blue")
    a.axhline(ALPHA, color="k", lw=1, label=f"alpha = {ALPHA}")
    a.axhline(ALPHA + 2 * rows[0]["se"], color="k", ls="--", lw=1, label="alpha + 2 SE")
    a.set_xticks(range(len(rows)), labels, fontsize=7)
    a.set_ylabel('P(rank >= 1) on pure noise')
    a.set_title(f"sign-flip test: false-positive rate (K = {rows[0]['folds']})")
    a.legend(fontsize=8)
    for c in result["power"]:
        b.plot(c["snr"], c["p_exact"], marker="o", label=f"{c['shape'][0]}x{c['shape'][1]}, r = {c['rank']}")
    b.set_xlabel("SNR (signal singular value / detection threshold)")
    b.set_ylabel("P(rank == r)")
    b.set_ylim(-0.02, 1.02)
    b.set_title("power on a planted rank-r signal")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400, help="null replicates per noise type and shape")
    ap.add_argument("--power-reps", type=int, default=60, help="replicates per SNR")
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/calibrate-signflip"))
    args = ap.parse_args()
    K = args.folds
    rows = []
    for i, shape in enumerate(SHAPES):
        for j, kind in enumerate(KINDS):
            rows.append(fpr(kind, shape, K, args.reps, seed=100 * i + j))
            x = rows[-1]
            print(f"FPR {kind:5s} {shape[0]:3d}x{shape[1]:<3d} K={K}: {x['fpr']:.3f} (SE {x['se']:.3f}, "
                  f"P(rank>=2) {x['p_rank_ge_2']:.3f}, {x['reps']} reps)", flush=True)
    curves = [power_curve((40, 24), K, 3, args.power_reps, seed=7), power_curve((96, 64), K, 3, args.power_reps, seed=8)]
    for c in curves:
        print(f"power {c['shape']} r={c['rank']}: " + ", ".join(f"SNR {s:g}: {p:.2f} (mean {m:.2f})"
              for s, p, m in zip(c["snr"], c["p_exact"], c["mean_rank"])), flush=True)
    result = {"alpha": ALPHA, "fpr": rows, "power": curves}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "calibration.png")
    print(f"wrote {args.out / 'calibration.json'} and calibration.png")


if __name__ == "__main__":
    main()
