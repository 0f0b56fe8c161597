"""Head fit before the gradient probe (`ProbeSettings.fit_head`, on by default for classification).

A freshly initialised classification head makes the mean gradient mostly a label-independent pull
towards the class prior (the shuffled-label gradient has as much energy as the true one). With
`fit_head`, the head is first fitted on frozen features: the input of the model's last head module
(e.g. BERT's `classifier`) is computed once under no_grad on training examples the calibration
batches do not use (at most FIT_EXAMPLES), then that module alone is fitted by full-batch L-BFGS
(deterministic; the examples depend on the seed) on the mean cross-entropy plus an L2 penalty
lam/2 ||W||^2 on its weights, lam chosen from L2_GRID by the cross-entropy on the last fifth of the
fit examples (fitted on the rest), then refitted on all of them. Without a penalty a few hundred
separable examples drive the loss to ~0 and the logits to infinity: the probe's examples would then
be fitted with certainty and give almost no gradient. The fit runs on
a deep copy of the model: the caller's model is untouched. lm tasks: a no-op (their head is
pretrained), noted. fit_head None (the default) skips a head that is not a pooled classifier
(one logit vector per example, e.g. GPT-2's per-token `score`), noted; True refuses it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

FIT_EXAMPLES = 512  # held-out training examples the head is fitted on (at most)
FIT_ITERS = 100  # L-BFGS iterations (one full-batch step of torch.optim.LBFGS with max_iter)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # penalties tried on the mean loss; the held-out fifth chooses one


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
    if s.fit_head is False:
        return loaded, None, []
    if data.kind != "classification":
        return loaded, None, ["fit_head: no-op for an lm task (the language-model head is pretrained)"] if s.fit_head else []
    import torch

    from ..errors import ConfigError
    from ..tasks import make_batches
    from ..training.model import head_module_names

    names = head_module_names(loaded.model)
    if not names and s.fit_head is None:
        return loaded, None, [f"fit_head: skipped, model '{loaded.name}' has no classification head module to fit"]
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
    with torch.no_grad():
        pooled = head(x).dim() == 2
    if not pooled and s.fit_head is None:
        return loaded, None, [f"fit_head: skipped, head '{names[-1]}' of '{loaded.name}' is not a pooled classifier "
                              "(one logit vector per example)"]
    if not pooled:
        raise ConfigError(f"--fit-head: head '{names[-1]}' of '{loaded.name}' does not map one feature vector "
                          "per example to logits; fit_head supports pooled classification heads.")
    with torch.no_grad():
        loss0, acc0 = _loss_acc(head, x, y, 0.0)
    if not bool(torch.isfinite(loss0)):  # the probe itself names the non-finite loss
        return loaded, None, [f"fit_head: skipped, the head's loss on frozen features is {float(loss0)}"]
    flags = [p.requires_grad for p in params]
    init = [p.detach().clone() for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        cut = len(y) - max(1, len(y) // 5)  # the last fifth of the fit examples chooses the penalty
        scores = {}
        for lam in L2_GRID:
            _fit(head, params, init, x[:cut], y[:cut], lam)
            with torch.no_grad():
                scores[lam] = float(_loss_acc(head, x[cut:], y[cut:], 0.0)[0])
        lam = min(L2_GRID, key=lambda v: (scores[v], -v))  # ties: the stronger penalty
        steps = _fit(head, params, init, x, y, lam)
        with torch.no_grad():
            loss1, acc1 = _loss_acc(head, x, y, 0.0)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
            p.grad = None
    record = {"module": names[-1], "examples": len(idx), "l2": lam, "l2_validation_loss": [[v, scores[v]] for v in L2_GRID], "steps": steps,
              "loss_before": float(loss0), "loss_after": float(loss1), "accuracy_before": acc0, "accuracy_after": acc1}
    return replace(loaded, model=model), record, [note] if note else []


def _loss_acc(head, x, y, lam: float):
    """(mean cross-entropy + lam * ||weights||^2 / 2, accuracy) of `head` on features x, labels y."""
    import torch

    logits = head(x)  # (n, classes)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    if lam:
        loss = loss + lam / 2 * sum(p.float().pow(2).sum() for p in head.parameters() if p.dim() > 1)
    return loss, float((logits.argmax(-1) == y).float().mean())


def _fit(head, params, init, x, y, lam: float) -> int:
    """Reset `params` to `init`, fit them by full-batch L-BFGS on the penalised loss; the iterations run."""
    import torch

    with torch.no_grad():
        for p, v in zip(params, init):
            p.copy_(v)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=FIT_ITERS, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _loss_acc(head, x, y, lam)[0]
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return int(opt.state[opt._params[0]]["n_iter"])
