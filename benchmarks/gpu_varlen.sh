#!/usr/bin/env bash
# tunebook.unsloth_varlen on a GPU box: the switch (one varlen flash call per layer) against Unsloth's per-row SDPA
# on the same packed batches — loss, logits and LoRA gradients close? tokens/s of each? (benchmarks/gpu_varlen.py)
# Run it for every new Unsloth version before widening unsloth_varlen.CHECKED and the gpu extra's pin.
#
# From the repository root, on a machine with a CUDA GPU and Unsloth (or with the carried wheels in .whl/ and the
# tokenizer in .benchdata/, made once by benchmarks/prepare_device.sh on a machine with PyPI access):
#   OUT=/tmp/o bash benchmarks/gpu_varlen.sh                       # Llama-3.2-3B shape, 8192-token micro-batches
#   OUT=/tmp/o bash benchmarks/gpu_varlen.sh --shape qwen3-4b --budget 12288 --steps 20
# With the project's device tool: carry [".whl", ".benchdata"], command `OUT=$OUT bash benchmarks/gpu_varlen.sh`
# (about 3-4 min on an H200: build ~30 s, Unsloth import and load ~60 s, the check and 2 x 2 x 13 micro-batches).
# Writes $OUT/env.txt, $OUT/varlen_log.txt, $OUT/varlen.json and $OUT/varlen.md. Exit 0: both paths ran (each step's
# attention dispatch and aten ops counted) and are close; 2: they ran and differ; 1: the switch did not engage, the
# batches were not packed, or both paths ran the same kernels (nothing compared).
# UNSLOTH_RETURN_LOGITS must not be set here: Unsloth then builds the trainer without packing (gpu_varlen.py says why).
set -u
OUT=${OUT:-/tmp/gpu_varlen}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
unset UNSLOTH_RETURN_LOGITS
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then  # the offline box: the wheels its image lacks (see device_run.sh)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import importlib.metadata as md, torch; print("torch", torch.__version__, "cuda", torch.version.cuda)
for p in ("unsloth", "unsloth_zoo", "transformers", "trl", "peft", "flash_attn"):
    try: print(f"{p}=={md.version(p)}")
    except md.PackageNotFoundError: print(f"{p}: not installed")'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout "${TOTAL_S:-570}" $PY -u benchmarks/gpu_varlen.py --out "$OUT" "$@" 2>&1 | tee "$OUT/varlen_log.txt" | grep -vE "^\s*$" | tail -40
exit "${PIPESTATUS[0]}"
