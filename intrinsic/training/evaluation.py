"""Held-out evaluation: accuracy and macro-F1 for classification, perplexity for causal LM, completion
log-loss (loss on completion tokens only) with exact match and forgetting for completion tasks, the
majority-class baseline, and the single higher-is-better score that studies compare."""

from __future__ import annotations

import math

from ..errors import IntrinsicError


def majority_baseline(task) -> float:
    """Accuracy on the test split of always predicting the most frequent training label."""
    from collections import Counter

    if not task.train_labels or not task.test_labels:
        return float("nan")
    top = Counter(task.train_labels).most_common(1)[0][0]
    return sum(1 for y in task.test_labels if y == top) / len(task.test_labels)


def macro_f1(preds, labels, num_labels: int) -> float:
    """Unweighted mean of per-class F1 (classes absent from both preds and labels are skipped)."""
    import numpy as np

    preds, labels = np.asarray(preds), np.asarray(labels)
    f1s = []
    for c in range(num_labels):
        tp = int(((preds == c) & (labels == c)).sum())
        fp = int(((preds == c) & (labels != c)).sum())
        fn = int(((preds != c) & (labels == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def evaluate(model, batches, *, task_kind: str, num_labels: int = 2, accelerator=None) -> dict[str, float]:
    """Held-out metrics of `model` on pre-made batches (this process's shard).

    classification: accuracy, macro_f1, loss (mean cross-entropy); lm and completion: perplexity, loss
    (mean token NLL over the labelled tokens: every real token for lm, completion tokens + EOS for
    completion). With an accelerator the shards of all processes are gathered first.
    """
    import torch
    import torch.nn.functional as F

    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds, labels, nll, count = [], [], torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            y = batch.pop("labels")
            if task_kind != "classification":  # lm, completion: labelled positions only, without the B x T x V logits
                found = labelled_nll(model, batch, y, accelerator)
                if found is not None:
                    nll += found[0].cpu()
                    count += found[1].cpu()
                    continue
            logits = model(**batch).logits.float()
            if task_kind == "classification":  # logits (B, C), y (B,)
                nll += F.cross_entropy(logits, y, reduction="sum").double().cpu()
                count += y.numel()
                preds.append(logits.argmax(-1).cpu())
                labels.append(y.cpu())
            else:  # logits (B, T, V), y (B, T) with -100 on padding
                shift_logits, shift_y = logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1)
                nll += F.cross_entropy(shift_logits, shift_y, ignore_index=-100, reduction="sum").double().cpu()
                count += (shift_y != -100).sum().cpu()
    model.train(was_training)
    sums = torch.stack([nll, count])  # (2,)
    if task_kind == "classification":
        p = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
        t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        if accelerator is not None and accelerator.num_processes > 1:
            pt = accelerator.pad_across_processes(torch.stack([p, t]).to(device), dim=1, pad_index=-1)
            pt = accelerator.gather_for_metrics(pt.unsqueeze(0)).cpu()  # (P, 2, N)
            p, t = pt[:, 0].reshape(-1), pt[:, 1].reshape(-1)
            p, t = p[t >= 0], t[t >= 0]
            sums = accelerator.gather_for_metrics(sums.to(device).unsqueeze(0)).cpu().sum(0)
        if t.numel() == 0:
            raise IntrinsicError("No held-out examples to evaluate on.")
        acc = float((p == t).double().mean())
        return {"accuracy": acc, "macro_f1": macro_f1(p.numpy(), t.numpy(), num_labels),
                "loss": float(sums[0] / sums[1])}
    if accelerator is not None and accelerator.num_processes > 1:
        sums = accelerator.gather_for_metrics(sums.to(device).unsqueeze(0)).cpu().sum(0)
    if sums[1] == 0:
        raise IntrinsicError("No held-out tokens to evaluate on.")
    loss = float(sums[0] / sums[1])
    return {"perplexity": math.exp(min(loss, 700.0)), "loss": loss}


def labelled_nll(model, batch: dict, y, accelerator=None):
    """(sum of next-token NLL over the labelled positions of `y`, their count), float64 and int64 on the device,
    from the decoder's last hidden states: logits are formed only for the labelled positions, in chunks, as
    `nn.Linear` and the model's own loss would (the head under the caller's autocast, the softmax in float32).
    The B x T x V logits are never stored: a 64 x 256-token batch of a 49k vocabulary is 3.2 GB in float32,
    twice that with the log-softmax, and 16 such processes do not fit one GPU. None when the head is not one
    plain linear layer (`fast.lce_unsupported`): then the caller takes the model's own logits."""
    import torch
    import torch.nn.functional as F

    from . import fast

    unwrapped = accelerator.unwrap_model(model) if hasattr(accelerator, "unwrap_model") else model
    base = fast.base_model(unwrapped)
    if not hasattr(base, "get_decoder") or fast.lce_unsupported(unwrapped, getattr(base.config, "model_type", ""), 1):
        return None
    hidden, targets = fast.shifted_hidden(base, batch, y)
    keep = targets != -100
    h, t = hidden[keep], targets[keep]  # (n, H), (n,)
    weight = base.get_output_embeddings().weight
    chunk = max(1, fast.CHUNK_ELEMENTS // weight.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=h.device)
    for i in range(0, h.shape[0], chunk):
        logits = F.linear(h[i:i + chunk], weight).float()
        total += F.cross_entropy(logits, t[i:i + chunk], reduction="sum").double()
    return total, keep.sum()


def score_of(metrics: dict[str, float], task_kind: str) -> float:
    """The single higher-is-better number: accuracy (classification), -perplexity (lm), or -loss
    (completion: minus the mean NLL per completion token, the held-out completion log-loss)."""
    if task_kind == "completion":
        return -metrics["loss"]
    return metrics["accuracy"] if task_kind == "classification" else -metrics["perplexity"]


class ExtraEval:
    """What a run scores beyond `evaluate`: for completion tasks exact match of greedy answers (metric
    `exact_match`) and the prompts cut to fit (`prompts_truncated`, over the run's train and held-out
    examples); with a forgetting corpus (`training.forgetting`) `forgetting_loss` and `forgetting`.

    Built before training, on the built model (LoRA B = 0: the base model's outputs), so the
    forgetting loss before training is the base model's."""

    def __init__(self, model, tokenizer, data, config, *, rank: int = 0, world: int = 1):
        from .data import shard_task
        from .forgetting import corpus_loss, forgetting_batches

        self.tokenizer, self.config = tokenizer, config
        self.kind = data.kind
        self.shard = shard_task(data, rank, world) if data.kind == "completion" else None
        self.truncated = None
        if data.kind == "completion":
            from ..tasks.completion import count_truncated

            self.truncated = sum(count_truncated(data, tokenizer, split=s, max_length=config.max_length)
                                 for s in ("train", "test"))
        found = forgetting_batches(config.forgetting_corpus, data, tokenizer, max_length=config.max_length,
                                   batch_size=config.eval_batch_size)
        self.corpus, self.corpus_batches = found if found else (None, [])
        self.before = corpus_loss(model, self.corpus_batches) if found else None

    def __call__(self, model, accelerator) -> dict[str, float]:
        import torch

        from .answers import exact_match
        from .forgetting import corpus_loss

        out: dict[str, float] = {}
        if self.shard is not None:
            unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
            device = next(unwrapped.parameters()).device
            hits, n = exact_match(unwrapped, self.tokenizer, self.shard, max_length=self.config.max_length,
                                  batch_size=self.config.eval_batch_size, device=device)
            counts = torch.tensor([hits, n], dtype=torch.float64)
            if accelerator is not None and accelerator.num_processes > 1:
                counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum").cpu()
            out["exact_match"] = float(counts[0] / counts[1]) if counts[1] else float("nan")
            out["prompts_truncated"] = float(self.truncated)
        if self.before is not None:
            now = corpus_loss(model, self.corpus_batches, accelerator)
            out["forgetting_loss"] = now
            out["forgetting"] = now - self.before
        return out
