#!/usr/bin/env bash
# Source on the GPU machine (no internet, no `datasets`): installs this checkout offline into
# /tmp/site and puts the carried assets (.gpu/site: MiniLM fp16 weights, the Rotten Tomatoes
# file, as bare package folders) on the path.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --upgrade --no-deps --no-build-isolation --no-index --target /tmp/site . >/tmp/pip.log 2>&1 \
  || { cat /tmp/pip.log; return 1; }
export PYTHONPATH="/tmp/site:$PWD/.gpu/site:${PYTHONPATH:-}"
export PATH="/tmp/site/bin:$PATH"
