"""A study's [truncate] stage (issue 13 items 2+3 in the studies): the full fine-tuning TEST cells of a tiny study
get truncation.json after the grid (never the lr-sweep cells), a rerun measures nothing new, the report's r90 section
shows the numbers of the truncation files and the probe's estimate of the same component, a spec without [truncate]
keeps its cells (the SmolLM2 studies keep the ids of their committed results), bad [truncate] tables are refused in
one line with exit 2."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intrinsic.study.r90_section import KEPT_NOTE, NO_PROBES_NOTE
from intrinsic.study.runner import Hooks, run_study, study_record
from intrinsic.study.spec import load_spec, parse_spec
from intrinsic.study.truncate import truncate_settings

from test_study_run import study_text

STUDIES = Path(__file__).resolve().parents[1] / "studies"
TRUNCATE = '\n[truncate]\nranks = [2, 1]\ncomponents = ["attention", "ffn", "q"]\n'


def tiny_text(model_dir, csv, truncate: str = TRUNCATE) -> str:
    """Seeds 0 and 1; `full` with an lr grid (its lr-sweep cells are full fine-tuning runs too, on validation)."""
    text = study_text(model_dir, csv, ["all", "full"], budgets='["all@1"]').replace("seeds = [0]", "seeds = [0, 1]")
    return text.replace("[probe]", "[train_overrides.full]\nlrs = [1e-3, 3e-3]\n\n[probe]") + truncate


def test_spec_without_truncate_keeps_its_cells(tiny_bert_dir, tiny_csv):
    plain = parse_spec(tiny_text(tiny_bert_dir, tiny_csv, truncate=""))
    with_t = parse_spec(tiny_text(tiny_bert_dir, tiny_csv))
    assert plain.truncate is None and "truncate" not in study_record(plain)["spec"]
    assert with_t.truncate == {"ranks": [1, 2], "components": ["attention", "ffn", "q"]}
    settings = truncate_settings(with_t)
    assert settings.ranks == (1, 2) and settings.components == "attention,ffn,q" and settings.device == "cpu"
    # LoRA cells keep their ids; full cells save their model (as if [train_overrides.full] said so)
    lora = {c.id for c in plain.cells() if c.strategy != "full"}
    assert lora == {c.id for c in with_t.cells() if c.strategy != "full"}
    assert all(c.train["save_full_model"] is True for c in with_t.cells() if c.strategy == "full")
    assert all("save_full_model" not in c.train for c in plain.cells())
    # when the study already saves them, [truncate] changes no id and no definition hash
    saving = tiny_text(tiny_bert_dir, tiny_csv, truncate="").replace("[train_overrides.full]",
                                                                      "[train_overrides.full]\nsave_full_model = true")
    a, b = parse_spec(saving), parse_spec(saving + TRUNCATE)
    assert [c.id for c in a.cells()] == [c.id for c in b.cells()] and a.definition_hash == b.definition_hash
    # [quick] that turns saving off measures no r90
    quick = saving + TRUNCATE + "\n[quick]\nseeds = [0]\n[quick.train_overrides.full]\nsave_full_model = false\n"
    assert parse_spec(quick, quick=True).truncate is None and parse_spec(quick).truncate is not None


@pytest.mark.parametrize("name", ["smollm2-placement-lm", "smollm2-placement-gen"])
def test_smollm2_studies_keep_their_ids(name):
    """[truncate] added to the SmolLM2 studies changes no cell id and no definition hash (their full cells already
    saved the model)."""
    path = STUDIES / f"{name}.toml"
    spec = load_spec(path)
    assert spec.truncate == {"ranks": [1, 2, 4, 8, 16, 32, 64], "components": None}
    lines = path.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("[truncate]"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    without = parse_spec("".join(lines[:start] + lines[end:]), source=str(path))
    assert without.truncate is None
    assert [c.id for c in without.cells()] == [c.id for c in spec.cells()]
    assert without.definition_hash == spec.definition_hash
    assert parse_spec(path.read_text(), quick=True).truncate is None  # its [quick] saves no model


@pytest.mark.parametrize(("table", "needle"), [
    ("[truncate]\nrank = [1, 2]\n", "unknown key 'rank' in [truncate]. Did you mean: ranks?"),
    ("[truncate]\nranks = [0, 2]\n", "`ranks` must be a non-empty list of distinct integers >= 1"),
    ("[truncate]\nranks = []\n", "`ranks` must be a non-empty list"),
    ("[truncate]\nranks = [2, 2]\n", "distinct"),
    ("[truncate]\ncomponents = [\"atention\"]\n", "unknown component 'atention'. Did you mean: attention"),
    ("[truncate]\ncomponents = \"ffn\"\n", "`components` must be a non-empty list"),
    ("[quick.truncate]\nranks = [\"a\"]\n", "[quick.truncate]: `ranks` must be"),
    ("[truncate]\n[train_overrides.full]\nsave_full_model = false\n", "needs the full fine-tuned models"),
])
def test_bad_truncate_table_is_one_line_exit_2(tiny_bert_dir, tiny_csv, tmp_path, table, needle):
    from intrinsic.cli.app import app

    toml = tmp_path / "s.toml"
    toml.write_text(study_text(tiny_bert_dir, tiny_csv, ["all"]) + "\n" + table)
    res = CliRunner().invoke(app, ["study", "run", str(toml), "--list"])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert needle in line and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert "s.toml:" in line  # names the file (and line) of the offending key


def test_study_truncates_full_test_cells_and_reports_r90(tiny_bert_dir, tiny_csv, tmp_path):
    from intrinsic.probes.schema import ProbeReport
    from intrinsic.study.report import write_report
    from intrinsic.study.rows import probe_key
    from intrinsic.truncation import TruncationResult

    spec = parse_spec(tiny_text(tiny_bert_dir, tiny_csv))
    out = tmp_path / "res"
    said: list[str] = []
    run_study(spec, out, hooks=Hooks(on_message=said.append))
    cells = spec.cells()
    tests = [c for c in cells if c.strategy == "full" and c.phase == "test"]
    others = [c for c in cells if c not in tests]
    assert len(tests) == 2 and any(c.strategy == "full" for c in others)  # two seeds; full lr-sweep cells too
    for c in tests:
        t = TruncationResult.load(out / "cells" / c.id)
        assert t is not None and t.grid == (1, 2) and [x.component for x in t.components] == ["attention", "ffn", "q"]
        assert {(p.component, p.rank) for p in t.points} == {(n, r) for n in ("attention", "ffn", "q")
                                                              for r in (0, 1, 2)}  # r = 0: the update removed
        assert all(c.score_without is not None and c.own_status != "not measured" for c in t.components)
    assert not any((out / "cells" / c.id / "truncation.json").exists() for c in others)
    assert any(m.startswith("truncate 2/2") and "q r=2" in m for m in said)  # progress through `say`

    # a rerun trains nothing and measures nothing new
    stamps = {c.id: (out / "cells" / c.id / "truncation.json").stat().st_mtime_ns for c in tests}
    said.clear()
    again = run_study(spec, out, hooks=Hooks(on_message=said.append))
    assert again.ran == 0 and not any(m.startswith("truncate") for m in said)
    assert stamps == {c.id: (out / "cells" / c.id / "truncation.json").stat().st_mtime_ns for c in tests}

    # a truncation.json from before the r = 0 point: the stage completes it, keeping the points it has
    path = out / "cells" / tests[0].id / "truncation.json"
    full = json.loads(path.read_text())
    old = dict(full, points=[dict(p, score=123.0) if (p["component"], p["rank"]) == ("q", 1) else p
                             for p in full["points"] if p["rank"] != 0])
    path.write_text(json.dumps(old))
    said.clear()
    run_study(spec, out, hooks=Hooks(on_message=said.append))
    assert any(m.startswith("truncate 1/1") for m in said)
    now = {(p["component"], p["rank"]): p["score"] for p in json.loads(path.read_text())["points"]}
    assert now == {**{(p["component"], p["rank"]): p["score"] for p in full["points"]}, ("q", 1): 123.0}
    old["points"] = full["points"]
    path.write_text(json.dumps(old))  # back as measured

    # models are not committed: a cell whose r90 is measured keeps its run; one whose r90 is not is trained again
    for c in tests:
        shutil.rmtree(out / "cells" / c.id / "model")
    lost = out / "cells" / tests[1].id
    (lost / "truncation.json").unlink()
    kept_run = (out / "cells" / tests[0].id / "run.json").stat().st_mtime_ns
    said.clear()
    ran: list[str] = []
    again = run_study(spec, out, hooks=Hooks(on_message=said.append, on_cell_start=lambda c, i, n: ran.append(c.id)))
    assert ran == [tests[1].id] and again.ran == 1
    assert any("trained again" in m and "saved model is gone" in m for m in said)
    assert (out / "cells" / tests[0].id / "run.json").stat().st_mtime_ns == kept_run
    assert TruncationResult.load(lost) is not None and (lost / "model" / "config.json").is_file()

    # plant known r90s (seed 0, seed 1) and spectral ranks, and a decoy in a sweep cell the report must ignore
    plant = {"attention": ((1, 2), (3, 5)), "ffn": ((2, None), (4, 4)), "q": ((2, 2), (1, 3))}
    own = {"attention": ((4, "reached", 0.5), (8, "reached", 0.25)), "ffn": ((None, "not reached", 0.75),
                                                                            (2, "reached", 0.5)),
           "q": ((None, "undefined", 0.005), (None, "undefined", 0.0))}  # (r90_own, status, own share) per seed
    for seed, c in enumerate(sorted(tests, key=lambda c: c.seed)):
        t = TruncationResult.load(out / "cells" / c.id)
        comps = tuple(dataclasses.replace(x, r90=plant[x.component][0][seed], energy_rank90=plant[x.component][1][seed],
                                          r90_own=own[x.component][seed][0], own_status=own[x.component][seed][1],
                                          own_share=own[x.component][seed][2])
                      for x in t.components)
        dataclasses.replace(t, components=comps).save(out / "cells" / c.id)
    sweep = next(c for c in others if c.strategy == "full")
    decoy = TruncationResult.load(out / "cells" / tests[0].id)
    dataclasses.replace(decoy, components=tuple(dataclasses.replace(x, r90=64, energy_rank90=64)
                                                for x in decoy.components)).save(out / "cells" / sweep.id)

    files, _, _ = write_report(out)
    r90 = {r["component"]: r for r in json.loads(Path(files.analysis_json).read_text())["r90"]["rows"]}
    assert list(r90) == ["attention", "ffn", "q"]
    assert r90["attention"]["r90s"] == [1, 2] and r90["attention"]["median"] == 1.5
    assert math.isclose(r90["attention"]["geomean"], math.sqrt(2))
    assert r90["ffn"]["r90s"] == [2, None] and r90["ffn"]["median"] is None and r90["ffn"]["geomean"] is None
    assert r90["q"]["median"] == 2 and r90["q"]["geomean"] == 2 and r90["q"]["ci_low"] == 2  # no spread
    assert [r90[k]["dw90"] for k in ("attention", "ffn", "q")] == [4, 4, 2]
    assert r90["attention"]["seeds"] == [0, 1]
    assert r90["attention"]["r90_owns"] == [4, 8] and r90["attention"]["own_median"] == 6
    assert math.isclose(r90["attention"]["own_geomean"], math.sqrt(32)) and r90["attention"]["own_share"] == 0.375
    assert r90["ffn"]["own_status"] == ["not reached", "reached"] and r90["ffn"]["own_median"] is None
    assert r90["q"]["own_status"] == ["undefined"] * 2 and r90["q"]["own_median"] is None  # left out, not infinite
    assert r90["q"]["own_share"] == pytest.approx(0.0025)

    # the probe's estimate: per seed the median intrinsic_rank of the component's blocks, median over seeds
    reps = [ProbeReport.load(out / "probes" / probe_key(spec, s)) for s in (0, 1)]
    want = {"attention": lambda m: m.kind == "attention", "ffn": lambda m: m.kind == "ffn",
            "q": lambda m: m.role == "q"}
    for name, pick in want.items():
        per_seed = [statistics.median(m.intrinsic_rank for m in rep.leaves() if pick(m)) for rep in reps]
        assert r90[name]["probe_rank"] == statistics.median(per_seed)
    assert (r90["attention"]["probe_blocks"], r90["ffn"]["probe_blocks"], r90["q"]["probe_blocks"]) == (8, 4, 2)

    md = Path(files.markdown).read_text()
    assert "## Measured intrinsic rank (r90) per component" in md
    assert "| attention | 2 | 1, 2 | 1.5 | 1.41 | [" in md and "| ffn | 2 | 2, n/r | - | - |" in md
    assert "| 4, 8 | 6 | 5.66 | [" in md and "| n/r, 2 | - | - | - | 62.5% [" in md and "| undef, undef | - |" in md
    assert "Measured intrinsic rank" in Path(files.html).read_text()
    assert NO_PROBES_NOTE not in md

    # regenerated without the probes (they are not committed): the readings of the previous report are kept
    with_probes = json.loads(Path(files.analysis_json).read_text())["r90"]
    (out / "probes").rename(tmp_path / "probes-away")
    files, _, _ = write_report(out)
    md = Path(files.markdown).read_text()
    kept = json.loads(Path(files.analysis_json).read_text())["r90"]
    assert KEPT_NOTE in md and NO_PROBES_NOTE not in md and kept["kept"] is True
    assert [r["probe_rank"] for r in kept["rows"]] == [r["probe_rank"] for r in with_probes["rows"]]
    assert kept["checks"] == with_probes["checks"] and kept["probe_seed"] == with_probes["probe_seed"]
    # ... but not over changed measurements: then the probe columns go empty and the report says why
    t = TruncationResult.load(out / "cells" / tests[0].id)
    dataclasses.replace(t, components=tuple(dataclasses.replace(x, r90=64) for x in t.components)).save(
        out / "cells" / tests[0].id)
    files, _, _ = write_report(out)
    md = Path(files.markdown).read_text()
    assert NO_PROBES_NOTE in md and KEPT_NOTE not in md
    r90 = {r["component"]: r for r in json.loads(Path(files.analysis_json).read_text())["r90"]["rows"]}
    assert r90["attention"]["probe_rank"] is None and r90["attention"]["r90s"] == [64, 2]


def test_r90_checks_read_study_variants(tiny_bert_dir, tiny_csv, tmp_path):
    """Truncation's names as study variants (a band -> all[LO-HI]) and the checks of the section on >= 3 components."""
    from intrinsic.study.r90 import component_modules
    from intrinsic.study.r90_section import _checks, study_variant
    from intrinsic.study.runner import run_probes

    assert [study_variant(n, ly) for n, ly in (("attention", (0, 1)), ("q", (0, 1)), ("first", (0,)),
                                                ("middle", (1, 2)))] == ["attention", "q", "all[0-0]", "all[1-2]"]
    spec = parse_spec(study_text(tiny_bert_dir, tiny_csv, ["all"]))
    out = tmp_path / "res"
    run_probes(spec, out)
    from intrinsic.study.rows import ProbeEnergy

    rep = ProbeEnergy(spec, out).report(0)
    layers = sorted({m.layer for m in rep.top_level()})
    assert component_modules(rep, study_variant("last", (layers[-1],))) == [
        m.name for m in rep.top_level() if m.layer == layers[-1]]
    from intrinsic.study.r90_section import R90Row

    rows = [R90Row(component=c, variant=c, seeds=(0, 1), r90s=v, median=None, geomean=None, ci_low=None,
                   ci_high=None, dw90=None, probe_rank=None) for c, v in (("attention", (1, 2)), ("ffn", (4, 8)),
                                                                          ("q", (2, 2)), ("k", (None, 1)))]
    checks, target = _checks(rows, rep)
    assert target == "r90" and checks and all(k["target"] == "r90" for k in checks)
    assert all(k["components"] == ["attention", "ffn", "q"] for k in checks)  # k never reached at seed 0
    # with r90_own reached at every seed on >= 3 components, the checks read r90_own (and only those components)
    owns = {"attention": (4, 8), "ffn": (8, 16), "q": (None, 2), "k": (1, 2), "v": (2, 2)}
    rows.append(dataclasses.replace(rows[-1], component="v", variant="v", r90s=(None, None)))
    rows = [dataclasses.replace(r, r90_owns=owns[r.component], own_status=tuple(
        "reached" if v is not None else "undefined" for v in owns[r.component])) for r in rows]
    checks, target = _checks(rows, rep)
    assert target == "r90_own" and checks and all(k["target"] == "r90_own" for k in checks)
    assert all(k["components"] == ["attention", "ffn", "k", "v"] for k in checks)
    from intrinsic.study.r90 import r90_checks

    want = r90_checks({"attention": [4, 8], "ffn": [8, 16], "k": [1, 2], "v": [2, 2]}, rep)
    assert [(k["statistic"], k["spearman_rho"]) for k in checks] == [(k.statistic, k.rho.rho) for k in want]
    # the probe's own rank estimate is one more check row: Spearman of probe_rank with the mean target per component
    from scipy.stats import spearmanr

    ranks = {"attention": 3.0, "ffn": 9.0, "q": 1.0, "k": 2.0, "v": 1.0}
    rows = [dataclasses.replace(r, probe_rank=ranks[r.component]) for r in rows]
    checks, _ = _checks(rows, rep)
    assert [(k["statistic"], k["spearman_rho"]) for k in checks[:-1]] == [(k.statistic, k.rho.rho) for k in want]
    mine = checks[-1]
    assert mine["statistic"] == "designated_rank" and mine["components"] == ["attention", "ffn", "k", "v"]
    assert mine["spearman_rho"] == pytest.approx(spearmanr([3, 9, 2, 1], [6, 12, 1.5, 2]).statistic)


def test_r90_check_note_says_why_a_reading_orders_nothing():
    from intrinsic.study.r90_section import _note

    assert _note({"spearman_rho": None, "readings": [1.0, 1.0, 1.0]}) == "constant: every component reads 1"
    assert _note({"spearman_rho": 0.5, "readings": [1.0, 2.0, 3.0]}) is None
    assert _note({"spearman_rho": None, "readings": [1.0, 2.0]}) is None
