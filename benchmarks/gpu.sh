#!/usr/bin/env bash
# The GPU figures of issue #12 in one call (under 8 minutes on one H200):
#  1. inference images/s and GFLOP/s per model family and path (eager fp32, bf16, fp16, ONNX Runtime CUDA where
#     onnxruntime-gpu is installed), channels_last, batch $BATCH           -> benchmarks/bench_infer.py
#  2. the full PartialLFW's work for `ours` at the paper preset: 7,701 aligned faces x 73 variants (562k
#     embeddings; synthetic faces: the time does not depend on what they show), end to end  -> bench_eval.py
#  3. training images/s of the paper preset (bf16, channels_last) and the achieved TFLOP/s (3 x forward FLOPs)
#                                                                           -> bench_models.py
# Without CUDA it runs the same three steps at small sizes on the CPU (the fallback that the tests run) and
# says that the GPU figures are still to be taken.
#   bash benchmarks/gpu.sh                 # on the device machine: .venv must exist (scripts/bootstrap.sh)
#   PARTIALFACE_GPU_SMALL=1 bash benchmarks/gpu.sh   # the small sizes anywhere
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PARTIALFACE_VENV:-$root/.venv}/bin/python"
[ -x "$py" ] || py="$(command -v python3)"
cd "$root"
if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' && [ -z "${PARTIALFACE_GPU_SMALL:-}" ]; then
    dev=cuda; batch=${BATCH:-512}; images=7701; variants=73; train_batch=256; families="dlib_resnet,ours_dlib,ours:cpu,ours:paper,resnet50:paper"
    paths="eager,bf16,fp16,onnx"; steps=20
    "$py" -c 'import torch; print("# GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
else
    dev=cpu; batch=8; images=16; variants=3; train_batch=4; families="ours:tiny,dlib_resnet"; paths="eager,onnx"; steps=2
    echo "# no CUDA device (or PARTIALFACE_GPU_SMALL set): the small CPU fallback; the GPU figures are still to be taken"
fi
t0=$(date +%s)
echo "## 1. inference per model family and path (batch $batch, $dev)"
"$py" benchmarks/bench_infer.py --device "$dev" --batch "$batch" --models "$families" --paths "$paths" \
    --images "$((batch < 64 ? 16 : 256))" --e2e none --repeats 3
echo "## 2. the full PartialLFW's work for ours (paper preset): $images faces x $variants variants, end to end"
"$py" benchmarks/bench_eval.py --device "$dev" --model ours --preset "$([ $dev = cuda ] && echo paper || echo tiny)" \
    --images "$images" --variants "$variants" --batch "$batch" --repeats 1 --workers 4 --infer "$([ $dev = cuda ] && echo bf16 || echo eager)"
echo "## 3. training, paper preset (bf16, channels_last, batch $train_batch)"
"$py" benchmarks/bench_models.py --device "$dev" --presets "$([ $dev = cuda ] && echo paper || echo tiny)" --models ours resnet50 \
    --batch "$train_batch" --steps "$steps" --warmup 2 --amp bf16 --channels-last
echo "# gpu.sh done in $(( $(date +%s) - t0 )) s"
