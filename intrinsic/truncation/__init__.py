"""The outcome-measured intrinsic rank of each component of a full fine-tuning run (r90, r90_own).

    from intrinsic.truncation import TruncateSettings, truncate_run
    result = truncate_run("runs/smollm2-gsm-full-s0", TruncateSettings(ranks=(1, 4, 16)))
    for row in result.components:
        print(row.component, row.r90, row.r90_own, row.own_share, row.gains)

For component C (attention, ffn, a role, a third of the layers) and rank r, the fine-tuned model
with W_base + SVD_r(W_ft - W_base) in C's blocks (everything else fine-tuned) is scored with the
run's own evaluation; r90 is the smallest r keeping 90% of full fine-tuning's gain over the
untrained model, r90_own the smallest r keeping 90% of the component's own contribution (the gain lost
when its update is removed, r = 0; `result.py` says why both). Files: `lowrank.py` (one SVD per block, a
reconstruction per rank), `components.py` (blocks, components, layer bands, the rank grid), `truncator.py` (swapping a
component's update in and out of the model), `measure.py` (the loop over (component, rank)),
`run.py` (loading a run from disk, truncation.json), `result.py` (typed results, r90, r90_own),
`settings.py` (`TruncateSettings`), `summary.py` (r90 over seeds, with CIs).
"""

from .components import BANDS, Block, blocks_of, component_blocks, layer_bands, parse_ranks, select_components
from .lowrank import LowRank, truncated
from .measure import WITHOUT, component_rows, measure
from .result import (
    KEEP,
    NOT_MEASURED,
    NOT_REACHED,
    OWN_FLOOR,
    REACHED,
    TRUNCATION_FILE,
    UNDEFINED,
    ComponentTruncation,
    TruncationPoint,
    TruncationResult,
    own_share,
    r90,
    r90_own,
)
from .run import check_run, is_complete, truncate_run
from .settings import DEFAULT_RANKS, TruncateSettings
from .summary import ComponentSummary, OwnSummary, RankShare, TruncationSummary, summarize_runs
from .truncator import Truncator

__all__ = [
    "BANDS", "DEFAULT_RANKS", "KEEP", "NOT_MEASURED", "NOT_REACHED", "OWN_FLOOR", "REACHED", "TRUNCATION_FILE",
    "UNDEFINED", "WITHOUT", "own_share", "r90_own", "Block", "ComponentSummary", "ComponentTruncation", "LowRank",
    "OwnSummary", "RankShare", "TruncationSummary", "summarize_runs",
    "TruncateSettings", "TruncationPoint", "TruncationResult", "Truncator", "blocks_of", "check_run",
    "component_blocks", "component_rows",
    "is_complete", "layer_bands", "measure", "parse_ranks", "r90", "select_components",
    "truncate_run", "truncated",
]
