#!/usr/bin/env bash
# Pack a study's results directory for the trip back from the GPU machine (at most 8 files of 16 MiB come
# back): everything but adapters, saved models and spectra.npz (a 30-layer probe's is 6 MB), as one tar.gz.   bash scripts/gpu_pack.sh RESULTS_DIR OUT.tgz
R=$1; T=$2
tar czf "$T" -C "$(dirname "$R")" --exclude='adapter' --exclude='model' --exclude='checkpoint' --exclude='*.npz' "$(basename "$R")"
ls -la "$T"
