"""Forgetting: held-out log-loss of a causal LM on a second, untouched corpus, before and after training.

`TrainConfig.forgetting_corpus` names the corpus: a text task read as causal LM (e.g. "bbc-news"; its
":lm" variant is used), "auto", or "" for none. "auto": on for completion tasks only (cheap: one
forward pass over `FORGETTING_EXAMPLES` texts at each evaluation), the built-in `AUTO_CORPUS`, or
`AUTO_FALLBACK` when the task itself comes from it (skipped when its package is not installed); lm and
classification runs stay as they were.
The sample is fixed: the first `FORGETTING_EXAMPLES` texts of the corpus's test split (the
subsample of seed 0), tokenized as the run's own lm batches (max_length, eval_batch_size).
Reported per evaluation as metrics `forgetting_loss` (mean token NLL now) and `forgetting`
(now minus before training; positive = the model got worse on the untouched corpus).
"""

from __future__ import annotations

AUTO_CORPUS, AUTO_FALLBACK = "bbc-news", "reuters-r8"  # the corpus "auto" picks (fallback for bbc-news tasks)
FORGETTING_EXAMPLES = 32  # texts of the corpus scored at each evaluation (paired before/after: the difference is precise)


def corpus_for(setting: str, task) -> str | None:
    """The corpus task name the run scores forgetting on, or None (see the module docstring)."""
    if not setting:
        return None
    if setting == "auto":
        if task.kind != "completion":
            return None
        return AUTO_FALLBACK if task.name.startswith(AUTO_CORPUS) else AUTO_CORPUS
    return setting


def forgetting_batches(setting: str, task, tokenizer, *, max_length: int, batch_size: int) -> tuple[str, list] | None:
    """(corpus name, its fixed lm batches) for the run, or None when forgetting is off."""
    from ..errors import MissingPackageError
    from ..tasks import load_task, make_batches

    name = corpus_for(setting, task)
    if name is None:
        return None
    try:
        corpus = load_task(name if name.endswith(":lm") else name + ":lm", seed=0, max_examples=1,
                           max_eval_examples=FORGETTING_EXAMPLES)
    except MissingPackageError:
        if setting == "auto":  # the default corpus's package is absent: no forgetting figure, the run goes on
            return None
        raise
    return name, make_batches(corpus, tokenizer, split="test", batch_size=batch_size, max_length=max_length,
                              seed=0, shuffle=False)


def corpus_loss(model, batches, accelerator=None) -> float:
    """Mean token NLL of `model` on the corpus batches (every process scores the whole sample)."""
    from .evaluation import evaluate

    return evaluate(model, batches, task_kind="lm", accelerator=None if accelerator is None else _Local(accelerator))["loss"]


class _Local:
    """An accelerator seen as a single process: the forgetting sample is not sharded, so nothing is gathered."""

    num_processes = 1

    def __init__(self, accelerator):
        self.device = accelerator.device
        self.unwrap_model = accelerator.unwrap_model
