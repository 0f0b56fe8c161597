"""The typed results of `truncate`: one measured point, one component's row, and the whole file
RUN_DIR/truncation.json (`TruncationResult`), with the two r90 rules.

gain(r) = score(r) - score(untrained); gain(0) = the gain with the component's update removed (its weights
back at the base model, everything else fine-tuned).
- r90 (the issue's literal definition) = the smallest r of the grid with gain(r) >= 0.9 x gain(full fine-
  tuning); None when no rank of the grid reaches it, or when full fine-tuning did not beat the untrained
  model (then nothing is there to keep). It saturates at the grid's first rank whenever the other
  components carry most of the gain (every component of SmolLM2 on rotten-tomatoes:lm reads 1).
- r90_own = the smallest r with gain(r) - gain(0) >= 0.9 x (gain(full) - gain(0)): 90% of the component's
  own contribution. Undefined when that contribution is below OWN_FLOOR x gain(full) (`own_status`).

OWN_FLOOR = 1%: r90_own resolves 10% of the own contribution, so with a contribution of 1% of the full gain
it must tell apart differences of 0.1% of it. The evaluation's own wiggle (bf16 autocast on the GPU: gains
that are not monotone in r, by up to ~0.02% of the full gain in the SmolLM2 run's truncation.json) is
about 5x smaller; below 1% the rule would read noise. One run gives no seed-to-seed spread, so the floor
is a share of the run's own full gain, the same rule for one run and for each seed of several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..fields import documented
from ..results import from_dict, read_json, write_json

SCHEMA_VERSION = 1  # of truncation.json; another version is measured afresh, not read
TRUNCATION_FILE = "truncation.json"
KEEP = 0.9  # r90 keeps this share of full fine-tuning's gain
OWN_FLOOR = 0.01  # r90_own is undefined below this share of the full gain (module docstring)
REACHED, NOT_REACHED, UNDEFINED, NOT_MEASURED = "reached", "not reached", "undefined", "not measured"


@dataclass(frozen=True)
class TruncationPoint:
    """The fine-tuned model with one component's update cut to rank r, scored."""

    component: str = documented(help="the component truncated (attention, ffn, a role, or a layer band)")
    rank: int = documented(help="the rank r each of its blocks was cut to (a block narrower than r keeps its "
                                "whole update; 0: the update removed, the blocks at the base model's weights)")
    score: float = documented(help="the run's held-out score of that model (higher is better, `score_of`)")
    energy: float = documented(help="share of the component's ||dW||^2 kept at rank r (sum over its blocks)")


@dataclass(frozen=True)
class ComponentTruncation:
    """One component's row of the table: gain at each rank of the grid and its r90."""

    component: str = documented(help="attention | ffn | q k v o gate up down (the model's roles) | first | "
                                     "middle | last (thirds of the layers)")
    group: str = documented(help='"kind" | "role" | "band"')
    blocks: int = documented(help="weight blocks truncated (one per module, one per role of a fused module)")
    params: int = documented(help="weights in those blocks")
    layers: tuple[int, ...] = documented(help="the layers its blocks sit in")
    max_rank: int = documented(help="the largest min(m, n) of its blocks: ranks of the grid are clamped to it")
    ranks: tuple[int, ...] = documented(help="the ranks measured (the grid clamped to max_rank, distinct)")
    gains: tuple[float | None, ...] = documented(help="gain(r) = score(r) - untrained score at each rank "
                                                      "(null: not measured yet)")
    energy: tuple[float | None, ...] = documented(help="share of the component's ||dW||^2 kept at each rank")
    r90: int | None = documented(help="smallest r with gain(r) >= 0.9 x gain(full); null if none")
    energy_rank90: int = documented(0, "from the update's spectrum alone, for comparison: the smallest r (any, not "
                                        "only the grid) whose SVD_r keeps 90% of the component's ||dW||^2 (0: dW = 0)")
    score_without: float | None = documented(None, "score with the component's update removed (r = 0: its blocks "
                                                   "at the base model, the rest fine-tuned); null: not measured")
    gain_without: float | None = documented(None, "gain(0) = score_without - untrained score")
    own_share: float | None = documented(None, "the share of full fine-tuning's gain the component carries: "
                                               "(gain(full) - gain(0)) / gain(full); null without gain(0) or a "
                                               "positive full gain")
    r90_own: int | None = documented(None, "smallest r with gain(r) - gain(0) >= 0.9 x (gain(full) - gain(0)): 90% "
                                           "of the component's own contribution; null unless own_status is reached")
    own_status: str = documented(NOT_MEASURED, '"reached" | "not reached" (on the grid) | "undefined" (own '
                                               'contribution below own_floor x gain(full), or no full gain) | '
                                               '"not measured" (gain(0) or a rank missing)')


@dataclass(frozen=True)
class TruncationResult:
    """RUN_DIR/truncation.json: the outcome-measured intrinsic rank of each component of one run."""

    schema_version: int = documented(help="1")
    run_dir: str = documented(help="the full fine-tuning run measured")
    run_created: str = documented(help="its run.json `created` stamp (a rerun of the run starts afresh)")
    model: str = documented(help="the base model (run.json `model`)")
    task: str = documented(help="the task")
    task_kind: str = documented(help='"classification" | "lm" | "completion"')
    eval_split: str = documented(help='the held-out split scored, as in the run: "test" or "validation"')
    eval_examples: int = documented(help="held-out examples scored (the run's own cap, max_eval_examples)")
    device: str = documented(help="where the SVDs and evaluations ran (cpu, cuda)")
    untrained_score: float = documented(help="score of the base model, untrained")
    full_score: float = documented(help="score of the full fine-tuned model, measured here")
    run_score: float = documented(help="score run.json recorded (equal to full_score up to the device's "
                                       "nondeterminism)")
    full_gain: float = documented(help="full_score - untrained_score")
    keep: float = documented(help="share of full_gain r90 keeps (0.9)")
    grid: tuple[int, ...] = documented(help="the rank grid asked for (--ranks)")
    components: tuple[ComponentTruncation, ...] = documented(help="one row per component asked for")
    available: tuple[str, ...] = documented(help="every component this model has (what --components may name)")
    points: tuple[TruncationPoint, ...] = documented(help="every (component, rank) measured on this run so far, "
                                                          "also of earlier requests (kept on rerun)")
    time_s: float = documented(help="wall time of this invocation (loading, SVDs, evaluations)")
    created: str = documented(help="UTC timestamp (ISO 8601) of the last write")
    own_floor: float = documented(OWN_FLOOR, "r90_own is undefined when the component's own contribution is below "
                                             "this share of full_gain")

    def save(self, run_dir) -> None:
        """Write RUN_DIR/truncation.json atomically."""
        from pathlib import Path

        write_json(Path(run_dir) / TRUNCATION_FILE, self)

    @classmethod
    def load(cls, run_dir) -> TruncationResult | None:
        """The truncation.json of `run_dir`, or None when there is none or it is of another schema."""
        from pathlib import Path

        path = Path(run_dir) / TRUNCATION_FILE
        if not path.is_file():
            return None
        try:
            data = read_json(path)
            if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
                return None
            return from_dict(cls, data)
        except Exception:  # noqa: BLE001 - an unreadable file is measured afresh
            return None


def r90(ranks, gains, full_gain: float, keep: float = KEEP) -> int | None:
    """The smallest rank whose gain reaches `keep` x full_gain (ranks ascending; None gains skipped)."""
    if not (full_gain > 0) or not math.isfinite(full_gain):
        return None
    for r, g in zip(ranks, gains, strict=True):
        if g is not None and g >= keep * full_gain:
            return r
    return None


def r90_own(ranks, gains, gain_without: float | None, full_gain: float, keep: float = KEEP,
            floor: float = OWN_FLOOR) -> tuple[int | None, str]:
    """(r90_own, own_status): the smallest rank whose gain over gain(0) reaches `keep` x the component's own
    contribution full_gain - gain(0) (ranks ascending). Undefined when full fine-tuning gained nothing or the
    contribution is below `floor` x full_gain; not measured when gain(0) or a gain of the grid is missing."""
    if gain_without is None or any(g is None for g in gains):
        return None, NOT_MEASURED
    own = full_gain - gain_without
    if not (full_gain > 0) or not math.isfinite(full_gain) or not (own >= floor * full_gain):
        return None, UNDEFINED
    for r, g in zip(ranks, gains, strict=True):
        if g - gain_without >= keep * own:
            return r, REACHED
    return None, NOT_REACHED


def own_share(gain_without: float | None, full_gain: float) -> float | None:
    """(full_gain - gain(0)) / full_gain: the share of the full gain the component carries; None without gain(0)
    or a positive full gain."""
    if gain_without is None or not (full_gain > 0) or not math.isfinite(full_gain):
        return None
    return (full_gain - gain_without) / full_gain
