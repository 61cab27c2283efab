#!/usr/bin/env bash
# Prepares, on a machine with PyPI access, what benchmarks/device_run.sh needs on an offline GPU box:
#   .whl/        wheels for Python 3.12 / x86-64 that the GPU image lacks (about 17 MB after trimming)
#   .benchdata/  a small tokenizer + config (the dequantized SmolLM2-135M student's; no weights)
# Both folders are git-ignored (.whl/ by .gitignore; add /.benchdata/ to .git/info/exclude).
# The GPU image is assumed to have torch 2.11 (cu130), transformers 5.17, peft, accelerate, triton, pyarrow,
# xxhash, numpy, pandas, huggingface_hub; see benchmarks/RESULTS.md for the exact versions that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=${WHL:-.whl}
mkdir -p "$WHL"
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHL" "$@"
}
# Unsloth and what it imports for bf16 LoRA (bitsandbytes: imported unconditionally by unsloth_zoo's patcher and
# used by Unsloth's default optimizer adamw_8bit); TRL as on CPU; datasets 4.x (Unsloth pins <5) and its small deps;
# pydantic for tunebook.settings.
dl unsloth==2026.10.9 unsloth_zoo==2026.10.9 cut_cross_entropy==25.1.1 torchao==0.18.0 msgspec==0.22.0 \
   bitsandbytes==0.50.2 trl==1.14.0 datasets==4.8.5 dill==0.4.0 multiprocess==0.70.18 fsspec==2026.2.0 \
   pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 typing_extensions==4.16.0
# Trim the two big wheels so everything fits the 64 MiB a call may carry: unsloth ships its web "studio" (82 MB
# unpacked, not imported by training); bitsandbytes ships one library per CUDA/ROCm version (keep CUDA 13.0 + CPU).
python3 - "$WHL" <<'EOF'
import glob, os, sys, zipfile
whl = sys.argv[1]
def trim(path, drop):
    tmp = path + ".tmp"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for it in zin.infolist():
            if drop(it.filename):
                continue
            data = zin.read(it.filename)
            if it.filename.endswith(".dist-info/RECORD"):
                data = b"\n".join(l for l in data.split(b"\n") if not drop(l.split(b",")[0].decode()))
            zout.writestr(it, data)
    os.replace(tmp, path)
for p in glob.glob(os.path.join(whl, "unsloth-*.whl")):
    trim(p, lambda n: n.startswith("studio/"))
for p in glob.glob(os.path.join(whl, "bitsandbytes-*.whl")):
    trim(p, lambda n: n.startswith("bitsandbytes/libbitsandbytes_")
         and not n.endswith(("cuda130.so", "cpu.so")))
EOF
du -sh "$WHL"

# Tokenizer + config of the CI student (made by `make test` / `tunebook run --profile ci`, which dequantize it).
src=$(ls -d "${TUNEBOOK_CACHE:-$HOME/.cache/tunebook}"/hf/SmolLM2-135M-Instruct-Q4_1-*/ 2>/dev/null | head -1 || true)
if [ -n "$src" ]; then
  mkdir -p .benchdata/smollm2-tok
  for f in tokenizer.json tokenizer_config.json chat_template.jinja config.json generation_config.json; do
    [ -f "$src/$f" ] && cp "$src/$f" .benchdata/smollm2-tok/
  done
  grep -qx '/.benchdata/' .git/info/exclude 2>/dev/null || echo '/.benchdata/' >> .git/info/exclude
  du -sh .benchdata
else
  echo "no dequantized SmolLM2 in the tunebook cache: run 'make test' (or --profile ci) once, or pass --tokenizer" >&2
fi
