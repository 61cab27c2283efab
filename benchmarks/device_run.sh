#!/usr/bin/env bash
# Runs on a lent GPU machine (no internet), from the repository root: installs the wheels carried in .whl/, then
# (1) the Unsloth run through tunebook's own 04_train code and (2) the throughput benchmark. Everything it writes
# goes to $OUT (env.txt, smoke_log.txt, bench_log.txt, results.json, table.md). See benchmarks/README.md.
#   OUT=/tmp/o bash benchmarks/device_run.sh                 # both
#   SKIP_SMOKE=1 VARIANTS=a,b,c bash benchmarks/device_run.sh --budget 12288
set -u
OUT=${OUT:-/tmp/bench_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
ROOT=$(pwd)
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0), "cc", torch.cuda.get_device_capability(0))
for p in ("transformers", "trl", "peft", "accelerate", "datasets", "triton", "unsloth", "unsloth_zoo",
          "cut_cross_entropy", "torchao", "bitsandbytes", "xformers", "flash_attn", "fsspec", "pyarrow"):
    try:
        print(f"{p}=={md.version(p)}")
    except md.PackageNotFoundError:
        print(f"{p}: not installed")
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

TOTAL_S=${TOTAL_S:-570}
if [ -z "${SKIP_SMOKE:-}" ]; then
  (cd /tmp && CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}" timeout "${SMOKE_S:-150}" \
     $PY -u "$ROOT/benchmarks/unsloth_tunebook_smoke.py" --out /tmp/tunebook_smoke) > "$OUT/smoke_log.txt" 2>&1
  echo "[${SECONDS}s] smoke rc=$?"
  grep -E "^SMOKE|^backend|^trainer:|^masked|Error|error:" "$OUT/smoke_log.txt" | tail -8
fi
$PY -u benchmarks/train_throughput.py --out "$OUT" --variants "${VARIANTS:-b,t,c@8192}" \
  --deadline $((TOTAL_S - SECONDS)) "$@"
