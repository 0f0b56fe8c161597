"""Study definitions: TOML parsing, validation errors with lines, grid expansion, hashes, packaged studies."""

from __future__ import annotations

import json

import pytest

from intrinsic.errors import ConfigError
from intrinsic.results import to_dict
from intrinsic.study.spec import key_line, load_spec, packaged_studies, parse_spec, resolve_study, spec_from_record

BASE = """\
name = "t"
question = "Which placement wins?"
model = "minilm"
task = "rotten-tomatoes"
seeds = [0, 1]

[train]
steps = 5
batch_size = 4

[[grid]]
name = "equal-rank"
strategies = ["all", "attention", "auto", "full"]
ranks = [4, 8]

[[grid]]
name = "equal-budget"
strategies = ["all", "ffn", "auto"]
budgets = ["all@4"]

[quick]
seeds = [0]
[quick.train]
steps = 2
"""


def test_parse_and_expand_with_normalisation():
    spec = parse_spec(BASE)
    cells = spec.cells()
    labels = {c.label for c in cells}
    # auto at rank r is auto under budget all@r; all under budget all@4 is all at rank 4; full has no size
    assert labels == {"all r=4", "all r=8", "attention r=4", "attention r=8", "auto budget=all@4",
                      "auto budget=all@8", "full", "ffn budget=all@4"}
    assert len(cells) == 8 * 2
    assert [c.seed for c in cells] == [0] * 8 + [1] * 8  # seed-major: a kill leaves whole seeds done
    auto4 = next(c for c in cells if c.label == "auto budget=all@4")
    assert set(auto4.groups) == {"rank=4", "budget=all@4"} and set(auto4.blocks) == {"equal-rank", "equal-budget"}
    assert len({c.id for c in cells}) == len(cells)
    assert len({c.config_id for c in cells}) == 8


def test_quick_overrides_seeds_and_train():
    spec = parse_spec(BASE, quick=True)
    assert spec.quick and spec.seeds == (0,) and spec.train["steps"] == 2 and spec.train["batch_size"] == 4
    assert len(spec.cells()) == 8
    assert spec.definition_hash != parse_spec(BASE).definition_hash


def test_hash_ignores_prose_and_device_but_not_settings():
    h = parse_spec(BASE).definition_hash
    assert parse_spec(BASE.replace("Which placement wins?", "Other words?")).definition_hash == h
    assert parse_spec(BASE.replace("seeds = [0, 1]\n", 'seeds = [0, 1]\ndevice = "cpu"\n')).definition_hash == h
    assert parse_spec(BASE.replace("steps = 5", "steps = 6")).definition_hash != h
    ids = {c.id for c in parse_spec(BASE).cells()}
    assert ids.isdisjoint({c.id for c in parse_spec(BASE.replace("steps = 5", "steps = 6")).cells()})


@pytest.mark.parametrize("text, table, key, line", [
    ('a = 1\n[train]\nstepz = 3\n', "train", "stepz", 3),
    ('[quick]\n[quick.train]\nlr = 1\n[train]\nlr = 2\n', "train", "lr", 5),
    ('[[grid]]\nx = 1\n[[grid]]\nbogus = 2\n', "grid", "bogus", 4),
])
def test_key_line(text, table, key, line):
    assert key_line(text, table, key) == line


@pytest.mark.parametrize("edit, needle", [
    (("[train]\n", "[train]\nstepz = 3\n"), "unknown key 'stepz'"),
    (('seeds = [0, 1]\n', 'seeds = [0, 1]\nsedes = 1\n'), "unknown key 'sedes'"),
    (('name = "equal-budget"\n', 'name = "equal-budget"\nrankz = [1]\n'), "unknown key 'rankz'"),
    (("[quick.train]\n", "[quick.train]\nbatchsize = 2\n"), "unknown key 'batchsize'"),
])
def test_unknown_key_names_key_and_line(edit, needle):
    text = BASE.replace(*edit)
    with pytest.raises(ConfigError) as e:
        parse_spec(text, source="s.toml")
    msg = str(e.value)
    assert needle in msg
    bad_line = next(i for i, l in enumerate(text.splitlines(), 1) if needle.split("'")[1] in l)
    assert msg.startswith(f"s.toml:{bad_line}:"), msg


def test_did_you_mean_for_train_key():
    with pytest.raises(ConfigError, match="Did you mean: steps"):
        parse_spec(BASE.replace("steps = 5", "stepz = 5"))


@pytest.mark.parametrize("edit, needle", [
    (("[[grid]]", "[[nogrid]]"), "unknown key"),
    (('strategies = ["all", "ffn", "auto"]', "strategies = []"), "no strategies"),
    (("ranks = [4, 8]", "ranks = []"), "needs `ranks` or `budgets`"),
    (("ranks = [4, 8]", "ranks = [0]"), "integers >= 1"),
    (("ranks = [4, 8]", 'ranks = ["4"]'), "integers >= 1"),
    (('strategies = ["all", "ffn", "auto"]', 'strategies = ["all", "fnn"]'), "unknown strategy 'fnn'"),
    (("seeds = [0, 1]", "seeds = []"), "empty"),
    (("seeds = [0, 1]", 'seeds = "0"'), "list of integers"),
    (("ranks = [4, 8]", 'ranks = [4]\nbudgets = ["1k"]'), "both ranks and budgets"),
    (("[train]", "[train]\nseed = 3"), "seeds come from the grid"),
    (('model = "minilm"\n', ""), "missing required key 'model'"),
    (("name = \"t\"", "name = \"t"), "not valid TOML"),
])
def test_bad_values(edit, needle):
    text = BASE.replace(*edit)
    assert text != BASE
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        parse_spec(text)


def test_empty_grid():
    text = BASE.split("[[grid]]")[0]
    with pytest.raises(ConfigError, match="empty grid"):
        parse_spec(text)


def test_unknown_probe_setting():
    with pytest.raises(ConfigError, match="unknown key 'batchez'"):
        parse_spec(BASE + "[probe]\nbatchez = 3\n")


def test_record_round_trip():
    spec = parse_spec(BASE, quick=True)
    rec = json.loads(json.dumps({"spec": to_dict(spec)}))
    again = spec_from_record(rec)
    assert again == spec and [c.id for c in again.cells()] == [c.id for c in spec.cells()]


EXPECTED = {  # study: (cells full, cells quick, seeds); full = test cells + 3 lr-sweep cells per arm
    "placement-ablation": (19 * 5 + 19 * 3, 7 + 2, 5),
    "weight-types": (12 * 5 + 12 * 3, 12, 5),
    "rank-sweep": (42 + 14 * 3, 6, 3),
    "layer-bands": (48 + 16 * 3, 5, 3),
    "placement-all8": (7 * 5 + 7 * 3, 7, 5),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_packaged_study_grids(name):
    path = resolve_study(name)
    assert path == packaged_studies()[name]
    full, quick = load_spec(path), load_spec(path, quick=True)
    cells, quick_cells, seeds = EXPECTED[name]
    assert (len(full.cells()), len(quick.cells())) == (cells, quick_cells)
    assert full.seeds == tuple(range(seeds)) and quick.seeds == (0,)
    sweep = [c for c in full.cells() if c.phase == "lr-sweep"]
    assert sweep and all(c.train["eval_split"] == "validation" and c.seed == 0 for c in sweep)
    assert {c.lr for c in sweep if c.strategy != "full"} == {3e-4, 1e-3, 3e-3}
    assert {c.lr for c in sweep if c.strategy == "full"} <= {3e-5, 1e-4, 3e-4}
    assert full.question.endswith("?")


def test_placement_ablation_design():
    spec = load_spec(resolve_study("placement-ablation"))
    labels = {c.label for c in spec.cells()}
    for r in (4, 8, 16):
        assert {f"all r={r}", f"attention r={r}", f"ffn r={r}", f"auto budget=all@{r}",
                f"attention budget=all@{r}", f"ffn budget=all@{r}"} <= labels
    assert "full" in labels


def test_resolve_unknown_study_suggests():
    with pytest.raises(ConfigError, match="Did you mean: placement-ablation"):
        resolve_study("placement-ablaton")
