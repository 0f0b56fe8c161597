"""Two gloo processes on the CPU, each taking every other batch, give the sums, sketches, spectra and ranks of one
process on the same batches (`intrinsic.probes.distributed`), in exact and in sketch mode."""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent('''
    import json, os, random, sys
    import torch
    from intrinsic.arch import discover
    from intrinsic.probes.gradient import accumulate_gradients, measure_sums
    from intrinsic.probes.rows import gradient_rows
    from intrinsic.probes.sketch import accumulate_sketches
    from intrinsic.probes.sketch_spectra import measure_sketches
    from intrinsic.tasks import TaskData, make_batches
    from intrinsic.testing import build_tiny_model

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    torch.set_num_threads(1)
    rng = random.Random(0)
    texts = tuple("".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(4, 21))) for _ in range(64))
    data = TaskData("t", "lm", (), texts, (), (), ())
    tiny = build_tiny_model("llama", task_kind="lm")
    model, refs = tiny.model, discover(tiny.model)
    real = make_batches(data, tiny.tokenizer, batch_size=2, num_batches=8, seed=0)
    shuffled = make_batches(data, tiny.tokenizer, batch_size=2, num_batches=8, seed=0, shuffle_labels=True)
    out = {}
    sums = accumulate_gradients(model, refs, real, shuffled, folds=8, example_energy=True)
    rows = gradient_rows(refs, measure_sums(sums, 100, 512, 0), "sign_flip", noise_norm=True)
    out["exact"] = [[r.grad_ranks[k] for k in ("sign_flip", "half_difference", "split_half", "noise_floor")]
                    + list(r.grad_sv[:4]) for r in rows]
    out["energy"] = [sums.example_energy[k] for k in sorted(sums.example_energy)]
    sk, _ = accumulate_sketches(model, refs, real, shuffled, k=8, folds=8, seed=0)
    rows = gradient_rows(refs, measure_sketches(sk, 100, 0), "sign_flip", noise_norm=True)
    out["sketch"] = [[r.grad_ranks[k] for k in ("sign_flip", "half_difference", "split_half", "noise_floor")]
                     + list(r.grad_sv[:4]) for r in rows]
    out["counts"] = sk.counts + [sk.n_noise]
    if int(os.environ.get("RANK", "0")) == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
''')


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(script, out, world: int) -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port()), "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(out)], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(world)]
    for p in procs:
        log = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_two_gloo_processes_give_the_ranks_of_one(tmp_path, monkeypatch):
    script = tmp_path / "probe_worker.py"
    script.write_text(SCRIPT)
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "one.json")])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    runpy.run_path(str(script), run_name="__main__")  # one process: this one
    one = json.loads((tmp_path / "one.json").read_text())
    two = _run(script, tmp_path / "two.json", 2)
    assert two["counts"] == one["counts"] == [1] * 8 + [8]
    for mode in ("exact", "sketch"):
        a, b = np.array(one[mode]), np.array(two[mode])  # rows x (4 ranks, 4 singular values)
        np.testing.assert_array_equal(a[:, :4], b[:, :4], err_msg=mode)
        np.testing.assert_allclose(b[:, 4:], a[:, 4:], rtol=1e-4, atol=1e-9, err_msg=mode)
    np.testing.assert_allclose(two["energy"], one["energy"], rtol=1e-5)
