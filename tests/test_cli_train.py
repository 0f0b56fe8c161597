"""CLI smoke tests for `train`, `compare` and `plan`, parsing `--json`, on a tiny saved BERT and a toy csv task."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from intrinsic.cli.app import app

runner = CliRunner()




@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """(model dir, csv task) : a tiny random BERT saved with its tokenizer, and a learnable 2-class csv."""
    from intrinsic.testing import build_tiny_model

    root = tmp_path_factory.mktemp("assets")
    tiny = build_tiny_model("bert")
    tiny.model.save_pretrained(root / "model")
    tiny.tokenizer.save_pretrained(root / "model")
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(160):
        y = rng.randint(0, 1)
        lines.append("".join(rng.choice("abcde" if y else "vwxyz") for _ in range(8)) + f",{'pos' if y else 'neg'}")
    (root / "toy.csv").write_text("\n".join(lines) + "\n")
    return root / "model", root / "toy.csv"


FAST = ["--steps", "12", "--batch-size", "8", "--max-length", "16", "--lr", "1e-2", "--device", "cpu"]


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def train_json(assets, out, *extra):
    model, csv = assets
    result = invoke(["train", model, csv, "--out", out, *FAST, *extra, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    got = {}
    for name, extra in {"all": ["--placement", "all", "--rank", "4"], "qv": ["--placement", "q,v", "--rank", "2"],
                        "full": ["--placement", "full", "--lr", "3e-3"]}.items():
        got[name] = (root / name, train_json(assets, root / name, *extra))
    return got


def test_train_json_is_run_json(runs):
    out, data = runs["all"]
    assert data["status"] == "complete" and data["placement"] == "all" and data["steps"] == 12
    assert data == json.loads((out / "run.json").read_text())
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "plan.json").is_file()
    assert data["lora_params"] == data["plan"]["params"]
    assert runs["full"][1]["adapter_bytes"] == 0


def test_train_refuses_existing_out_then_resume_returns_it(assets, runs):
    model, csv = assets
    out, data = runs["qv"]
    refused = invoke(["train", model, csv, "--out", out, "--placement", "q,v", "--rank", "2", *FAST])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    resumed = invoke(["train", model, csv, "--out", out, "--placement", "q,v", "--rank", "2", *FAST,
                      "--resume", "--json"])
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["created"] == data["created"]


def test_train_bad_input_is_one_line_exit_2(assets, tmp_path):
    model, csv = assets
    cases = [
        ["--placement", "auto", "--rank", "4"],  # auto chooses ranks itself
        ["--placement", "full", "--rank", "4"],
        ["--placement", "q,x"],  # unknown role
        ["--placement", "all", "--budget", "10"],  # below one rank-1 adapter
        ["--placement", "all", "--budget-like", "8"],
    ]
    for extra in cases:
        result = invoke(["train", model, csv, "--out", tmp_path / "bad", *FAST, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def test_train_text_output_has_metrics_table(assets, tmp_path):
    model, csv = assets
    result = invoke(["train", model, csv, "--out", tmp_path / "t", "--placement", "attention", "--rank", "2", *FAST])
    assert result.exit_code == 0, result.output
    assert "trainable params" in result.stdout and "peak memory" in result.stdout


def test_compare_marks_pareto(runs):
    from intrinsic.pareto import pareto_front

    dirs = [runs[k][0] for k in ("all", "qv", "full")]
    result = invoke(["compare", *dirs, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["run"] for r in rows] == ["all", "qv", "full"] and {r["group"] for r in rows} == {1}
    nan = float("nan")  # a run at (or below) its majority baseline learned nothing: never starred
    front = set(pareto_front([(r["score"] if r["score"] > r["baseline"] else nan, r["trainable_params"])
                              for r in rows]))
    assert [r["pareto"] for r in rows] == [i in front for i in range(3)]
    assert not any(r["pareto"] and r["score"] <= r["baseline"] for r in rows)
    assert rows[1]["pareto"] == (rows[1]["score"] > rows[1]["baseline"])  # q,v@2: nothing has fewer params
    text = invoke(["compare", *dirs])
    assert text.exit_code == 0 and "Pareto-optimal: above its baseline" in text.stdout


def test_plan_from_probe(assets, tmp_path):
    from intrinsic.probes import probe

    model, csv = assets
    probe(str(model), str(csv), batches=2, batch_size=8, max_length=16, update_steps=None).save(tmp_path / "probe")
    result = invoke(["plan", tmp_path / "probe", "--budget-like", "all@2", "--max-rank", "8", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["strategy"] == "auto" and 0 < plan["params"] <= plan["budget"]
    for name in ("plan.json", "peft_config.json", "lora_config.py"):
        assert (tmp_path / "probe" / "plan" / name).is_file()
    peft_cfg = json.loads(invoke(["plan", tmp_path / "probe", "--budget", "5k", "--format", "peft", "--json"]).stdout)
    assert peft_cfg["task_type"] == "SEQ_CLS" and peft_cfg["target_modules"]
    snippet = invoke(["plan", tmp_path / "probe", "--budget", "5k", "--format", "python", "--json"]).stdout
    assert snippet.startswith("from peft import LoraConfig")
    table = invoke(["plan", tmp_path / "probe", "--budget", "1%"])
    assert table.exit_code == 0 and "layer" in table.stdout
    # and training from that probe directory with auto
    out = train_json(assets, tmp_path / "auto", "--placement", "auto", "--probe", tmp_path / "probe", "--budget", "5k")
    assert out["placement"] == "auto" and out["lora_params"] <= 5000


def test_auto_without_probe_dir_probes_first(assets, tmp_path):
    out = train_json(assets, tmp_path / "auto", "--placement", "auto", "--budget-like", "q,v@2")
    assert out["placement"] == "auto" and (tmp_path / "auto" / "probe" / "probe.json").is_file()
    assert out["lora_params"] <= out["plan"]["budget"]


# ----------------------------------------------------------------------------- sizes that cannot fit (issue 15.1)


def _no_run_left(out):
    return not any((out / name).exists() for name in ("run.json", "plan.json", "adapter"))


def test_rank_or_budget_too_large_for_the_model_is_exit_2(assets, tmp_path):
    from intrinsic.probes import probe

    model, csv = assets
    for extra, needle in [(["--rank", "100000"], "rank 100000 is above 32 = min(out, in)"),
                          (["--rank", "33"], "rank 33 is above 32"),
                          (["--budget", "200%"], "more than the base model")]:
        out = tmp_path / f"big{extra[1]}"
        result = invoke(["train", model, csv, "--out", out, *FAST, "--placement", "all", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert needle in result.output and "Traceback" not in result.output and _no_run_left(out)
    probe(str(model), str(csv), batches=2, batch_size=8, max_length=16, update_steps=None).save(tmp_path / "probe")
    result = invoke(["plan", tmp_path / "probe", "--placement", "all", "--rank", "100000"])
    assert result.exit_code == 2 and "--rank 32 or less" in result.output
    assert not (tmp_path / "probe" / "plan").exists()


def test_run_that_cannot_fit_in_memory_is_refused_before_it_starts(assets, tmp_path, monkeypatch):
    import intrinsic.training.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**20)  # 1 MiB left
    model, csv = assets
    out = tmp_path / "oom"
    result = invoke(["train", model, csv, "--out", out, *FAST, "--placement", "all", "--rank", "4",
                     "--batch-size", "64", "--max-length", "128"])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert "needs about" in line and "only 1.0 MiB" in line and "Traceback" not in result.output
    for option in ("--rank", "--batch-size", "--max-length", "--mixed-precision"):
        assert option in line
    assert _no_run_left(out)


# ----------------------------------------------------------------------------- auto's probe and budget (issue 15.8)


def test_auto_refuses_a_probe_of_another_model_or_task(assets, tmp_path):
    from intrinsic.probes import probe
    from intrinsic.testing import build_tiny_model

    model, csv = assets
    other = build_tiny_model("roberta")
    other.model.save_pretrained(tmp_path / "roberta")
    other.tokenizer.save_pretrained(tmp_path / "roberta")
    other_csv = tmp_path / "other.csv"
    other_csv.write_text(csv.read_text())
    small = dict(batches=2, batch_size=8, max_length=16, update_steps=None)
    probe(str(tmp_path / "roberta"), str(csv), **small).save(tmp_path / "p-model")
    probe(str(model), str(other_csv), **small).save(tmp_path / "p-task")
    for probe_dir, needle in [("p-model", "was made for model"), ("p-task", "was made on task")]:
        out = tmp_path / f"run-{probe_dir}"
        result = invoke(["train", model, csv, "--out", out, *FAST, "--placement", "auto",
                         "--probe", tmp_path / probe_dir])
        assert result.exit_code == 2, result.output
        line = " ".join(result.output.split())
        assert needle in line and "--probe" in line and "Traceback" not in result.output
        assert _no_run_left(out)


def test_budget_like_means_the_same_in_plan_and_train_and_unspent_is_said(assets, tmp_path):
    from intrinsic.arch import discover
    from intrinsic.models import load_model
    from intrinsic.placement import fixed_plan
    from intrinsic.probes import probe

    model, csv = assets
    all_at_2 = fixed_plan(discover(load_model(str(model)).model), "all", 2).params  # over every module
    probe(str(model), str(csv), batches=2, batch_size=8, max_length=16, update_steps=None,
          layers=(1,)).save(tmp_path / "sub")  # a subset probe: layer 1 only
    planned = invoke(["plan", tmp_path / "sub", "--budget-like", "all@2", "--max-rank", "1", "--json"])
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    trained = train_json(assets, tmp_path / "run", "--placement", "auto", "--probe", tmp_path / "sub",
                         "--budget-like", "all@2", "--max-rank", "1")
    assert plan["budget"] == trained["plan"]["budget"] == all_at_2
    assert plan["entries"] == trained["plan"]["entries"]
    assert plan["settings"]["unspent"] == all_at_2 - plan["params"] > 0  # rank cap 1 on layer 1 cannot spend it
    text = invoke(["plan", tmp_path / "sub", "--budget-like", "all@2", "--max-rank", "1", "--out", tmp_path / "p"])
    assert text.exit_code == 0 and "unspent" in text.stdout


# ----------------------------------------------------------------------------- --resume checks what it returns (issue 15.3)


def test_resume_refuses_a_run_with_other_settings(assets, runs, tmp_path):
    model, csv = assets
    out, data = runs["qv"]  # q,v at rank 2 with FAST
    before = (out / "run.json").read_text()
    other_csv = tmp_path / "other.csv"
    other_csv.write_text(csv.read_text())
    cases = [
        (["--placement", "all", "--rank", "2"], "placement 'q,v' (asked: 'all')"),
        (["--placement", "q,v", "--rank", "3"], "plan"),
        (["--placement", "q,v", "--rank", "2", "--steps", "13"], "steps 12 (asked: 13)"),
        (["--placement", "q,v", "--rank", "2", "--lr", "2e-2"], "lr 0.01 (asked: 0.02)"),
    ]
    for extra, needle in cases:
        result = invoke(["train", model, csv, "--out", out, *FAST, *extra, "--resume"])
        assert result.exit_code == 2, (extra, result.output)
        line = " ".join(result.output.split())
        assert needle in line and "--overwrite" in line and "Traceback" not in result.output, (extra, line)
    result = invoke(["train", model, other_csv, "--out", out, *FAST, "--placement", "q,v", "--rank", "2", "--resume"])
    assert result.exit_code == 2 and "task" in result.output
    assert (out / "run.json").read_text() == before  # nothing touched
    same = invoke(["train", model, csv, "--out", out, *FAST, "--placement", "q,v", "--rank", "2", "--resume", "--json"])
    assert same.exit_code == 0 and json.loads(same.stdout)["created"] == data["created"]


# ----------------------------------------------------------------------------- trainer options (issue 11)


def test_train_resume_continues_an_interrupted_run_from_its_checkpoint(assets, runs, tmp_path):
    from intrinsic import PlacementRequest, TrainConfig
    from intrinsic.pipeline import Pipeline

    model, csv = assets
    whole = runs["all"][1]  # FAST --placement all --rank 4, uninterrupted
    pipe = Pipeline(str(model), str(csv), seed=0, device="cpu")
    config = TrainConfig(steps=12, batch_size=8, max_length=16, lr=1e-2, checkpoint_every=5)

    def stop(ev):
        if ev["event"] == "step" and ev["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.train(pipe.plan(PlacementRequest("all", rank=4)), config, tmp_path, callback=stop)
    resumed = train_json(assets, tmp_path, "--placement", "all", "--rank", "4", "--checkpoint-every", "5", "--resume")
    assert resumed["resumed_from"] == 5 and resumed["loss_curve"] == whole["loss_curve"]
    assert resumed["score"] == whole["score"]


def test_train_bad_trainer_options_are_one_line(assets, tmp_path):
    model, csv = assets
    result = invoke(["train", model, csv, "--out", tmp_path / "x", *FAST, "--grad-accum", "0"])
    assert result.exit_code == 2 and "error: --grad-accum must be a positive integer, got 0" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
