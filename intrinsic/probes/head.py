"""Opt-in head fit before the gradient probe (`ProbeSettings.fit_head`).

A freshly initialised classification head makes the mean gradient mostly a label-independent pull
towards the class prior (the shuffled-label gradient has as much energy as the true one). With
`fit_head`, the head is first fitted on frozen features: the input of the model's last head module
(e.g. BERT's `classifier`) is computed once under no_grad on training examples the calibration
batches do not use (at most FIT_EXAMPLES), then that module alone is fitted by full-batch L-BFGS
(deterministic; the examples depend on the seed). The fit runs on a deep copy of the model: the
caller's model is untouched. lm tasks: a no-op (their head is pretrained), noted.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

FIT_EXAMPLES = 512  # held-out training examples the head is fitted on (at most)
FIT_ITERS = 100  # L-BFGS iterations (one full-batch step of torch.optim.LBFGS with max_iter)


def _fit_indices(data, s) -> tuple[list[int], str | None]:
    """Training indices outside the calibration batches (seeded order), else the calibration ones (noted)."""
    import numpy as np

    from ..tasks import example_order

    n = len(data.train_texts)
    used = set(example_order(n, seed=s.seed, batch_size=s.batch_size, num_batches=s.batches).tolist())
    rest = [int(i) for i in np.random.default_rng([s.seed, 11]).permutation(n) if int(i) not in used]
    if len(rest) >= s.batch_size:
        return rest[:FIT_EXAMPLES], None
    return sorted(used)[:FIT_EXAMPLES], (f"fit_head: only {len(rest)} training examples outside the calibration "
                                         "batches; the head was fitted on the calibration examples")


def _features(model, head, batches):
    """(inputs of `head`, labels), computed once under no_grad."""
    import torch

    feats, labels = [], []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].detach()))
    try:
        with torch.no_grad():
            for b in batches:
                dev = next(model.parameters()).device
                model(**{k: v.to(dev) for k, v in b.items() if k != "labels"})
                labels.append(b["labels"].to(dev))
    finally:
        hook.remove()
    return torch.cat(feats), torch.cat(labels)


def fit_head(loaded, data, s) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """(model to probe, head_fit record or None, notes). Without fit_head or for lm: the model as given."""
    if not s.fit_head:
        return loaded, None, []
    if data.kind != "classification":
        return loaded, None, ["fit_head: no-op for an lm task (the language-model head is pretrained)"]
    import torch

    from ..errors import ConfigError
    from ..tasks import make_batches
    from ..training.model import head_module_names

    names = head_module_names(loaded.model)
    if not names:
        raise ConfigError(f"--fit-head: model '{loaded.name}' has no classification head module to fit.")
    idx, note = _fit_indices(data, s)
    sub = replace(data, train_texts=tuple(data.train_texts[i] for i in idx),
                  train_labels=tuple(data.train_labels[i] for i in idx))
    batches = make_batches(sub, loaded.tokenizer, batch_size=s.batch_size, max_length=s.max_length, seed=s.seed,
                           shuffle=False)
    model = copy.deepcopy(loaded.model)
    model.eval()
    head = model.get_submodule(names[-1])
    x, y = _features(model, head, batches)
    params = [p for p in head.parameters()]
    flags = [p.requires_grad for p in params]

    def loss_acc():
        logits = head(x)
        if logits.dim() != 2:
            raise ConfigError(f"--fit-head: head '{names[-1]}' of '{loaded.name}' does not map one feature vector "
                              "per example to logits; fit_head supports pooled classification heads.")
        return torch.nn.functional.cross_entropy(logits.float(), y), float((logits.argmax(-1) == y).float().mean())

    try:
        for p in params:
            p.requires_grad_(True)
        with torch.no_grad():
            before, acc0 = loss_acc()
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=FIT_ITERS, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_acc()[0]
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            after, acc1 = loss_acc()
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
            p.grad = None
    record = {"module": names[-1], "examples": len(idx), "steps": int(opt.state[opt._params[0]]["n_iter"]),
              "loss_before": float(before), "loss_after": float(after),
              "accuracy_before": acc0, "accuracy_after": acc1}
    return replace(loaded, model=model), record, [note] if note else []
