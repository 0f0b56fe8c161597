"""Completion tasks: masking (loss = hand computation), chat templates, truncation, the shuffled control,
exact match by greedy generation (planted answers), forgetting (= hand log-loss), bad inputs via the CLI."""

from __future__ import annotations

import json
import types

import pytest
import torch
from typer.testing import CliRunner

from intrinsic.cli.app import app
from intrinsic.errors import ConfigError
from intrinsic.tasks import TaskData, load_task, make_batches
from intrinsic.tasks.completion import count_truncated, encode_pair
from intrinsic.testing import build_tiny_model, tiny_tokenizer
from intrinsic.training.answers import exact_match, greedy_answers
from intrinsic.training.evaluation import evaluate

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def task(prompts, completions, test=None):
    test = test or (prompts, completions)
    return TaskData("t", "completion", (), tuple(prompts), (), tuple(test[0]), (), train_completions=tuple(completions),
                    test_completions=tuple(test[1]))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hand_completion_nll(model, tok, prompts, completions) -> tuple[float, int]:
    """Sum of -log p(completion token | everything before) over completion tokens + EOS, one example at a time."""
    total, count = 0.0, 0
    for p, c in zip(prompts, completions):
        ids = [tok.bos_token_id] + tok(p + "\n", add_special_tokens=False)["input_ids"]
        ans = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([ids + ans])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)  # (T, V)
        for k, t in enumerate(ans):
            total -= float(logp[len(ids) + k - 1, t])
            count += 1
    return total, count


def test_completion_loss_is_the_hand_computation():
    tiny = build_tiny_model("llama", task_kind="completion")
    prompts, comps = ["what is 2 + 3?", "hi"], ["5", "hello there"]
    data = task(prompts, comps)
    (batch,) = make_batches(data, tiny.tokenizer, batch_size=2, max_length=64, shuffle=False)
    total, count = hand_completion_nll(tiny.model, tiny.tokenizer, prompts, comps)
    assert int((batch["labels"] != -100).sum()) == count  # completion tokens + EOS only
    with torch.no_grad():
        loss = float(tiny.model(**batch).loss)  # the training loss
    assert loss == pytest.approx(total / count, rel=1e-5)
    metrics = evaluate(tiny.model, [batch], task_kind="completion")
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)


def test_chat_template_is_used_for_prompt_and_completion(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    p, c = encode_pair(tok, "what?", "forty two")
    assert p == tok("<user>what?|<assistant>", add_special_tokens=False)["input_ids"]
    assert c == tok("forty two|", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # chat messages from a file: the turns before the final assistant turn form the prompt
    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(10)]
    data = load_task(str(write_jsonl(tmp_path / "chat.jsonl", rows)))
    assert data.kind == "completion" and data.columns == "messages=messages"
    prompt, answer = data.train_texts[0], data.train_completions[0]
    p, c = encode_pair(tok, prompt, answer)
    assert tok.decode(p).replace(" ", "") == f"<system>bebrief|<user>{prompt[1][1]}|<assistant>"
    assert c[:-1] == tok(f"{answer}|", add_special_tokens=False)["input_ids"]


def test_long_prompt_is_cut_from_the_left_and_counted():
    tok = tiny_tokenizer()
    data = task(["x" * 40 + "tail?", "short"], ["ab", "cd"])
    assert count_truncated(data, tok, split="train", max_length=16) == 1
    (batch,) = make_batches(data, tok, batch_size=2, max_length=16, shuffle=False)
    row = batch["input_ids"][0]
    assert row.shape[0] == 16 and tok.decode(row[:13]).replace(" ", "").endswith("tail?[UNK]")  # "\\n" is unknown to it
    assert batch["labels"][0].tolist()[-3:] == tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with pytest.raises(ConfigError, match="no room for the prompt"):
        make_batches(task(["p"], ["y" * 20]), tok, batch_size=1, max_length=16)
    with pytest.raises(ConfigError, match="tokenizes to nothing"):
        encode_pair(tok, "p", "")


def test_shuffled_control_pairs_prompts_with_other_completions():
    tok = tiny_tokenizer()
    prompts, comps = [f"p{i}" for i in range(12)], [f"answer {chr(97 + i)}" for i in range(12)]
    data = task(prompts, comps)
    real = make_batches(data, tok, batch_size=12, max_length=32, seed=3, shuffle=False)[0]
    noise = make_batches(data, tok, batch_size=12, max_length=32, seed=3, shuffle=False, shuffle_labels=True)[0]
    again = make_batches(data, tok, batch_size=12, max_length=32, seed=3, shuffle=False, shuffle_labels=True)[0]
    assert torch.equal(noise["input_ids"], again["input_ids"])  # seeded

    def answers(b):
        return [tok.decode([t for t in row.tolist() if t != -100][:-1]).replace(" ", "") for row in b["labels"]]

    assert sorted(answers(noise)) == sorted(answers(real))  # same completions ...
    moved = sum(a != b for a, b in zip(answers(noise), answers(real)))
    assert moved >= 8  # ... on other prompts
    assert [tok.decode(r[:3]) for r in noise["input_ids"]] == [tok.decode(r[:3]) for r in real["input_ids"]]


class PlantedLM(torch.nn.Module):
    """A real module that answers each left-padded prompt with a planted text, char by char, then EOS.
    It checks the left padding: real tokens are right-aligned and the mask matches them."""

    def __init__(self, tok, plants: dict[str, str]):
        super().__init__()
        self.tok, self.plants, self.w = tok, plants, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids, use_cache, cache=None, **_):
        vocab = len(self.tok)
        if cache is None:
            assert bool((attention_mask[:, -1] == 1).all())  # left padding
            texts = [self.tok.decode(r[m.bool()].tolist()).replace(" ", "") for r, m in zip(input_ids, attention_mask)]
            answer = [next(a for q, a in self.plants.items() if q.replace(" ", "") in t) for t in texts]
            ids = [self.tok(a, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id] for a in answer]
            cache = {"ids": ids, "step": 0}
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], vocab)
        for r, ids in enumerate(cache["ids"]):
            logits[r, -1, ids[min(cache["step"], len(ids) - 1)]] = 10.0
        return types.SimpleNamespace(logits=logits, cache={"ids": cache["ids"], "step": cache["step"] + 1})


def test_exact_match_scores_planted_answers():
    tok = tiny_tokenizer()
    tok.backend_tokenizer.decoder = __import__("tokenizers").decoders.Fuse()  # characters back into words
    prompts = ["capital of france?", "2+2?", "colour of sky?", "best?"]
    refs = ["Paris", "4", "blue", "none"]
    model = PlantedLM(tok, dict(zip(prompts, [" paris. ", "5", "Blue!", "nonetheless"])))
    hits, n = exact_match(model, tok, task(prompts, refs), max_length=64, batch_size=3, device="cpu")
    assert (hits, n) == (2, 4)  # " paris. " and "Blue!" match once normalized; "5" and "nonetheless" do not


def test_greedy_answers_match_unbatched_generation():
    tiny = build_tiny_model("llama", task_kind="completion", seed=1)
    tok = tiny.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["a", "hello world", "xyz?", "q"]]
    got = greedy_answers(tiny.model, tok, prompts, max_new_tokens=5, batch_size=4, device="cpu")
    for ids, text in zip(prompts, got):
        with torch.no_grad():
            out = tiny.model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = out[0, len(ids):].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert text == tok.decode(new, skip_special_tokens=True)


def test_forgetting_is_the_hand_log_loss_before_and_after(tmp_path):
    from intrinsic.arch import discover
    from intrinsic.placement import fixed_plan
    from intrinsic.training import TrainConfig, train

    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": f"the {w} sat on the mat {i}"} for i, w in
                                                      enumerate(["cat", "dog", "owl", "fox", "hen"] * 4)])
    texts = load_task(f"{corpus}:lm", seed=0, max_examples=1, max_eval_examples=64).test_texts

    def hand(model):
        tok = tiny.tokenizer
        total, count = 0.0, 0
        for t in texts:
            x = tok(t, truncation=True, max_length=32, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
            total -= float(logp[torch.arange(x.shape[1] - 1), x[0, 1:]].sum())
            count += x.shape[1] - 1
        return total / count

    tiny = build_tiny_model("llama", task_kind="completion")
    before = hand(tiny.model)
    data = task([f"what is {i} + 1?" for i in range(24)], [str(i + 1) for i in range(24)])
    config = TrainConfig(steps=6, lr=5e-2, batch_size=8, max_length=32, eval_batch_size=16,
                         forgetting_corpus=str(corpus), save_adapter=False)
    result = train(tiny, data, fixed_plan(discover(tiny.model), "all", 4), config)
    after = hand(tiny.model)
    assert result.metrics["forgetting_loss"] == pytest.approx(after, rel=1e-5)
    assert result.metrics["forgetting"] == pytest.approx(after - before, rel=1e-4, abs=1e-6)
    assert abs(after - before) > 1e-3  # training moved it
    assert 0.0 <= result.metrics["exact_match"] <= 1.0 and result.score == -result.metrics["loss"]


def test_builtin_generative_tasks_are_fixed():
    a, b = load_task("arithmetic:2", max_examples=20), load_task("arithmetic:2", max_examples=20)
    assert a == b and a.kind == "completion"
    full = load_task("arithmetic:3")
    assert not set(full.train_texts) & set(full.test_texts)
    x, y = full.train_texts[0].removeprefix("What is ").rstrip("?").split(" + ")
    assert full.train_completions[0] == str(int(x) + int(y))


runner = CliRunner()


@pytest.mark.parametrize("rows, needle", [
    ([{"foo": "a", "bar": "b"}] * 10, "available columns: foo, bar"),
    ([{"prompt": f"p{i}", "completion": " "} for i in range(10)], "no usable train examples"),
])
def test_bad_completion_files_exit_2_with_one_line(tmp_path, rows, needle):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = runner.invoke(app, ["tasks", str(path)])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_unknown_arithmetic_digits_and_overlong_completion_exit_2(tmp_path):
    assert runner.invoke(app, ["tasks", "arithmetic:x"]).exit_code == 2
    tiny = build_tiny_model("llama", task_kind="completion")
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    path = write_jsonl(tmp_path / "long.jsonl", [{"question": f"q{i}", "answer": "z" * 30} for i in range(10)])
    result = runner.invoke(app, ["train", str(tmp_path / "m"), str(path), "--max-length", "16", "--steps", "1",
                                 "--placement", "all", "--rank", "2", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "no room for the prompt" in result.output and "Traceback" not in result.output


def test_csv_columns_by_flag_and_probe_on_a_completion_task(tmp_path):
    from intrinsic.probes import probe

    path = tmp_path / "qa.csv"
    path.write_text("q,a,junk\n" + "".join(f"what is {i} plus one?,{i + 1},x\n" for i in range(30)))
    result = runner.invoke(app, ["tasks", str(path), "--prompt-column", "q", "--completion-column", "a", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "completion" and summary["columns"] == "prompt=q completion=a"
    assert summary["train_size"] + summary["test_size"] == 30
    data = load_task(str(path), prompt_column="q", completion_column="a")
    tiny = build_tiny_model("llama", task_kind="completion")
    rep = probe(tiny, data, batches=2, batch_size=4, max_length=32, update_steps=None)
    assert rep.task == str(path) and all(m.grad_norm > 0 for m in rep.modules)
