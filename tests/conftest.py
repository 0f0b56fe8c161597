"""Shared fixtures: tiny models saved to disk and tiny local tasks, built without any download."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors: one torch thread avoids OpenMP wake-ups that cost 10-50x on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert():
    """A random-init tiny BERT in memory, fresh for each test module (probes may not share one with training)."""
    from intrinsic.testing import build_tiny_model

    return build_tiny_model("bert")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A random-init tiny BERT with a character tokenizer, saved like a hub checkpoint."""
    from intrinsic.testing import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-bert")
    tiny = build_tiny_model("bert")
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory):
    """A 2-class csv task whose label is visible in the text (a token 'good'/'bad')."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("task") / "tiny.csv"
    words = ["movie", "plot", "actor", "scene", "film", "story", "music", "ending"]
    lines = ["text,label"]
    for i in range(160):
        label = i % 2
        body = " ".join(rng.choice(words) for _ in range(6))
        lines.append(f"{'good' if label else 'bad'} {body},{'pos' if label else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path
