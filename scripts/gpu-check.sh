#!/usr/bin/env bash
# Checks the GPU backend on a machine with an NVIDIA GPU and no .NET SDK.
#
# Built here, carried there (the lent GPU machines have CUDA 13 and the driver, but no dotnet; see
# ../shared/GPU.md):
#
#   scripts/gpu-check.sh pack     # here: self-contained linux-x64 publish of Lxt.GpuCheck + the reference
#                                 # fixtures, packed as .gpu-check/lxt-gpu-check.tar.xz (git-ignored, ~30 MB)
#   scripts/gpu-check.sh run      # there, from the repository root, with .gpu-check carried along
#                                 # (device tool: carry [".gpu-check"], command "bash scripts/gpu-check.sh run")
#   scripts/gpu-check.sh variants # there: the device time of 4 Llama 3.2 1B layers at 2048 tokens for each choice of
#                                 # kernels (paired values, softmax rows a warp each or in registers, program tables as
#                                 # kernel parameters), attention whole, in blocks of query rows or as one op (with no
#                                 # checkpointing, which then fits), and every value at every position,
#                                 # one line each and the fastest last; then `run` with LXT_GPU_CHECK_ARGS set to it
#   scripts/gpu-check.sh tune     # there: the three leading choices of `variants` (fused attention on tensor cores
#                                 # with and without ldmatrix, products), then `run` with the fastest's options,
#                                 # all within one device call (LXT_GPU_TUNE_SECONDS, default 560), so no second
#                                 # call has to catch the machine before it is given back
#
# `run` unpacks under /tmp, samples nvidia-smi's memory use in the background, and runs the check: parity with
# every fixture on Device.Cuda (1e-4 in float32, 1e-2 in TF32, 5e-2 in bfloat16; the third explanation, which replays
# a CUDA graph, is the one compared), cuBLAS against the ILGPU tiled product, GEMM TFLOP/s at 4096³, then AttnLRP
# timings on random Llama 3.2 1B and Llama 3.1 8B shapes at 128/512/2048 tokens, each without checkpointing, at the
# products and every layer, and where no checkpointing outgrows the reference's memory but the products fit, at the
# products keeping the attention probabilities that fit in it (median of 7 after two warm-up runs, peak device memory
# held by Lxt), and prints a short table last: every run, then each shape's fastest run within the reference's peak
# memory against the reference's time. Logs go to $OUT (or /tmp/lxt-gpu-out). The README's table is
# `LXT_GPU_CHECK_ARGS="--precision bf16"` (about 90 s on an H100, plus the machine's start); "--profile-tokens 2048"
# adds a per-op profile.
#
# Environment: LXT_GPU_CHECK_ARGS passes options to the check (e.g. "--models 1b --tokens 128,512 --repeats 3"
# to fit a short lease, "--precision tf32" or "--precision bf16" for TF32 or bfloat16 products); LXT_CUBLAS_PATH
# names the cuBLAS library if it is not libcublas.so.12/.13 on the loader path (run adds /usr/local/cuda/lib64 to LD_LIBRARY_PATH);
# LXT_GPU_WORK is where the archive is unpacked (default /tmp/lxt-gpu-check). GpuCheckScriptTests.fs runs `tune` here
# with a stand-in for the check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pack_dir="$root/.gpu-check"
archive="$pack_dir/lxt-gpu-check.tar.xz"

# unpacks the carried archive under /tmp ($work) and makes $out (for logs) and CUDA's libraries reachable
unpack() {
  [ -f "$archive" ] || { echo "$archive is missing: run 'scripts/gpu-check.sh pack' where dotnet is, and carry .gpu-check" >&2; exit 1; }
  out="${OUT:-/tmp/lxt-gpu-out}"
  mkdir -p "$out"
  work="${LXT_GPU_WORK:-/tmp/lxt-gpu-check}"
  rm -rf "$work" && mkdir -p "$work"
  tar -C "$work" -xJf "$archive"
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# the choices `variants` times, the most promising first (LXT_GPU_VARIANTS replaces the list, one choice per line)
all_variants="--pairs All --fused-attention --tensor-core-attention --ldmatrix --checkpointing none
--pairs All --fused-attention --tensor-core-attention --checkpointing none
--pairs All
--pairs All --fused-attention --checkpointing none
--pairs All --attention-blocks 0
--pairs All --softmax-register-rows
--pairs All --table-parameters
--pairs All --softmax-warp-rows
--pairs All --softmax-register-rows --table-parameters
--pairs All --attention-blocks 1024
--pairs All --all-positions"

# times 4 layers of the 1B shape at 2048 tokens for each choice of $1, one line each, and sets $best and $best_ms to
# the fastest: a choice is started only while less than $2 seconds have passed, and each is stopped after $3 seconds,
# so a kernel that hangs on the device costs one choice, not the lease
time_variants() {
  local variants="$1" budget="$2" limit="$3" started=$SECONDS v ms status
  best="" best_ms=""
  : > "$out/variants.log"
  : > "$out/variants-summary.txt"
  while IFS= read -r v; do
    [ -n "$v" ] || continue
    if [ $((SECONDS - started)) -ge "$budget" ]; then echo "$v: not started (${budget} s spent)"; continue; fi
    status=0
    # shellcheck disable=SC2086
    timeout -k 5 "$limit" "$work/app/Lxt.GpuCheck" --precision bf16 --models 1b --tokens 2048 --checkpointing products \
      --profile-tokens 2048 --layers 4 --repeats 3 $v > "$work/variant.log" 2>&1 || status=$?
    [ "$status" -eq 0 ] || echo "(exit status $status)" >> "$work/variant.log"
    cat "$work/variant.log" >> "$out/variants.log"
    ms=$(grep 'per run replaying a CUDA graph' "$work/variant.log" | awk '{print $5; exit}' || true)
    # the tensor-core product and parity, the attention kernels' speed and the comparison with products, where the
    # choice prints them
    grep -E 'tensor-core product|on tensor cores vs CUDA cores|tokens, causal|against products|exit status' "$work/variant.log" | sed 's/^/  /' | tee -a "$out/variants-summary.txt" || true
    echo "$v: ${ms:-?} ms for 4 layers$([ "$status" -eq 0 ] || echo ", not chosen: a check failed or it was stopped")" | tee -a "$out/variants-summary.txt"
    # only a choice whose checks all passed can be the fastest
    if [ "$status" -eq 0 ] && [ -n "$ms" ] && { [ -z "$best_ms" ] || awk "BEGIN{exit !($ms < $best_ms)}"; }; then best="$v" best_ms="$ms"; fi
  done <<< "$variants"
  if [ -n "$best_ms" ]; then echo "fastest: $best ($best_ms ms)"; else echo "no choice was timed (see $out/variants.log)"; return 1; fi
}

# the check itself (parity on every fixture, then the timing table), with LXT_GPU_CHECK_ARGS, stopped after $1 seconds
# (0: no limit), nvidia-smi's memory use sampled beside it
run_check() {
  local limit="$1" status=0 sampler peak
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$out/memory-used.csv" 2>/dev/null &
  sampler=$!
  # shellcheck disable=SC2086
  timeout -k 5 "$limit" "$work/app/Lxt.GpuCheck" --fixtures "$work/fixtures" --out "$out" ${LXT_GPU_CHECK_ARGS:-} || status=$?
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$out/memory-used.csv" 2>/dev/null | tail -1)
  echo "nvidia-smi peak memory used during the run: ${peak:-?} MiB (exit status $status)"
  return "$status"
}

case "${1:-}" in
  pack)
    fixtures="${LXT_FIXTURES:-$root/../shared/fixtures/lxt-reference}"
    [ -d "$fixtures" ] || fixtures="$(cd "$root/../.." && pwd)/shared/fixtures/lxt-reference"
    [ -d "$fixtures" ] || { echo "fixtures not found; set LXT_FIXTURES" >&2; exit 1; }
    rm -rf "$pack_dir/stage" && mkdir -p "$pack_dir/stage"
    # no trimming: it breaks ILGPU's reflection over kernels
    dotnet publish "$root/Lxt.GpuCheck/Lxt.GpuCheck.csproj" -c Release -r linux-x64 --self-contained true \
      -p:PublishTrimmed=false -o "$pack_dir/stage/app"
    cp -r "$fixtures" "$pack_dir/stage/fixtures"
    tar -C "$pack_dir/stage" -cJf "$archive" app fixtures
    rm -rf "$pack_dir/stage"
    ls -l "$archive"
    ;;
  variants)
    unpack
    time_variants "${LXT_GPU_VARIANTS:-$all_variants}" "${LXT_GPU_VARIANTS_BUDGET:-390}" "${LXT_GPU_VARIANT_TIMEOUT:-180}"
    ;;
  tune)
    unpack
    total="${LXT_GPU_TUNE_SECONDS:-560}"
    # the three leading choices, none started after 150 s and each at most 120 s, so at least 290 s are left to run
    time_variants "${LXT_GPU_VARIANTS:-$(head -3 <<< "$all_variants")}" "${LXT_GPU_VARIANTS_BUDGET:-150}" "${LXT_GPU_VARIANT_TIMEOUT:-120}" || true
    # the fastest's kernels and attention, with every checkpointing choice the table tries (the choices' own
    # --checkpointing is for 4 layers); products where none was timed
    chosen=$(sed -E 's/--checkpointing [^ ]+//' <<< "${best:---pairs All}")
    left=$((total - SECONDS))
    echo "run with: --precision bf16 $chosen ${LXT_GPU_CHECK_ARGS:-} (within ${left} s)"
    [ "$left" -gt 30 ] || { echo "no time left for the run" >&2; exit 1; }
    status=0
    LXT_GPU_CHECK_ARGS="--precision bf16 $chosen ${LXT_GPU_CHECK_ARGS:-}" run_check "$left" || status=$?
    # the choices' lines again, after the run's long output
    echo "choices timed first (4 layers of the 1B shape at 2048 tokens):"
    cat "$out/variants-summary.txt"
    exit "$status"
    ;;
  run)
    unpack
    run_check 0
    ;;
  *)
    echo "usage: scripts/gpu-check.sh pack|run|variants|tune" >&2
    exit 2
    ;;
esac
