"""05's other answerer: the student through llama-server instead of transformers (``evaluate.engine``).

llama-server serves the very GGUF the student was trained from (04 trained on its dequantized copy, so the weights
are the same numbers), with the LoRA adapter converted to GGUF by llama.cpp's own ``convert_lora_to_gguf.py`` and
switched per request — scale 1 answers as the fine-tuned student, scale 0 as the base. Prompts are rendered with the
trained tokenizer's chat template, exactly as on the transformers path, and sent as raw text; answers are greedy.

Measured on the 2-core CPU (``benchmarks/eval_engine.py``, RESULTS.md): against bf16 transformers 1.2–1.6× faster for
closed-book questions and general prompts (short prompts: decoding dominates), slower for RAG prompts (prompt
processing dominates: PyTorch reads long prompts at the CPU's matmul peak). ``hybrid`` uses it for the short prompts
only; over three finished runs that made 05's answering only 1.04× faster (``benchmarks/hybrid_engine.py``), and the
base's answers changed wording, so transformers stays the default.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SERVER_DIR = "student-server"  # under eval/: the server's record and log (stopped by serve.stop_all)


def check_engine(engine: str, student: str) -> None:
    """``evaluate.engine`` — ``transformers``; ``llama.cpp``, this server for every prompt; or ``hybrid``, this server
    for the decode-bound closed-book and general prompts and transformers for the prompt-bound RAG prompts — with a
    clear error where the last two meet a student that is not a GGUF."""
    from . import models

    kind = models.parse(student).kind
    if engine in ("llama.cpp", "hybrid") and kind not in ("bundled", "gguf"):
        raise ValueError(f"evaluate.engine={engine} needs a GGUF student; {student!r} is a {kind}")


def base_dir(trained: dict[str, Any]) -> Path:
    """The base student's transformers folder the adapter was trained on (``evaluate.trained_record``): the copy 04
    loaded, else the model's own."""
    from . import models

    loaded = trained.get("loaded_from") or ""
    return Path(loaded if loaded and Path(loaded).is_dir() else models.hf_model(trained["student"]))


def lora_to_gguf(adapter_dir: Path, base_hf_dir: Path, out: Path) -> Path:
    """The PEFT adapter as a GGUF LoRA (f32), with llama.cpp's converter; kept next to the adapter's copy."""
    from .export import _run, llama_tools_dir

    script = llama_tools_dir() / "convert_lora_to_gguf.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} is missing: run `make install` (it unpacks llama.cpp's converters)")
    if out.is_file() and out.stat().st_mtime >= (Path(adapter_dir) / "adapter_model.safetensors").stat().st_mtime:
        return out
    tmp = out.with_suffix(".tmp.gguf")
    _run([sys.executable, str(script), "--base", str(base_hf_dir), "--outtype", "f32", "--outfile", str(tmp),
          str(adapter_dir)], out.parent / "convert_lora.log")
    tmp.replace(out)
    return out


class StudentServer:
    """llama-server with the student's GGUF and its LoRA (loaded at scale 0); ``answer`` switches it per request.
    ``start()``/``stop()``, or use it as a context manager (stopped on exit, also after an error); the runner's
    end stops one a crash left behind (``serve.stop_all``). ``rag=False`` (``evaluate.engine=hybrid``): it answers
    the short prompts only, and RAG prompts go to transformers (:meth:`for_prompts`)."""

    def __init__(self, student: str, adapter_dir: Path, base_hf_dir: Path, work_dir: Path, parallel: int = 4,
                 ctx_per_slot: int = 2048, port: int = 8095, lora_gguf: Path | None = None, rag: bool = True):
        self.rag = rag
        self.student, self.adapter_dir, self.base_hf_dir = student, Path(adapter_dir), Path(base_hf_dir)
        self.work_dir, self.parallel, self.ctx, self.port = Path(work_dir), parallel, ctx_per_slot, port
        self.teacher: Any = None
        self.lora_gguf = Path(lora_gguf) if lora_gguf else None  # an exported GGUF LoRA (scope.export): not converted

    def __enter__(self) -> "StudentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "StudentServer":
        from . import models, serve
        from .settings import ServeSettings

        self.work_dir.mkdir(parents=True, exist_ok=True)
        lora = self.lora_gguf or lora_to_gguf(self.adapter_dir, self.base_hf_dir, self.work_dir / "adapter-lora.gguf")
        cfg = ServeSettings(port=self.port, parallel=self.parallel, ctx_per_slot=self.ctx, ready_timeout=300, spec_type="none",
                            extra_args=["--lora", str(lora), "--lora-init-without-apply"])
        serve.stop(self.work_dir)  # a server a crashed 05 left behind may hold another adapter: never reuse it
        self.teacher = serve.start(cfg, str(models.gguf_path(self.student)), self.work_dir)
        return self

    def stop(self) -> None:
        from . import serve

        serve.stop(self.work_dir)

    @property
    def engine(self) -> str:
        """``evaluate.engine`` as this server serves it: ``llama.cpp`` (every prompt) or ``hybrid``."""
        return "llama.cpp" if self.rag else "hybrid"

    def for_prompts(self, rag: bool) -> "StudentServer | None":
        """This server where it answers prompts of this kind (closed-book, or with chunks), else None: transformers."""
        return self if self.rag or not rag else None

    def answer(self, prompts: list[str], tuned: bool, max_new_tokens: int, desc: str = "") -> list[str]:
        """Greedy completions of already templated ``prompts``, in order; the LoRA at scale 1 when ``tuned``."""
        return self.answer_scored(prompts, tuned, max_new_tokens, desc)[0]

    def answer_scored(self, prompts: list[str], tuned: bool, max_new_tokens: int,
                      desc: str = "") -> tuple[list[str], list[float | None]]:
        """:meth:`answer`, and each answer's confidence as on the transformers path (the lowest probability of a
        chosen token, from llama-server's ``n_probs``)."""
        from .client import complete_all
        from .progress import bar

        url = self.teacher.base_url.removesuffix("/v1") + "/completion"
        scale = 1.0 if tuned else 0.0
        # no prompt cache: a slot's cached prompt was computed with the other LoRA scale
        bodies = [{"prompt": p, "n_predict": max_new_tokens, "temperature": 0.0, "top_k": 1, "seed": 0, "n_probs": 1,
                   "cache_prompt": False, "lora": [{"id": 0, "scale": scale}]} for p in prompts]
        with bar(total=len(prompts), desc=desc or ("fine-tuned" if tuned else "base")) as pbar:
            results = complete_all(self.teacher.base_url, "", bodies, self.parallel, url=url,
                                   on_done=lambda _i, _r: pbar.update(1))
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise RuntimeError(f"the student's llama-server failed {len(errors)} of {len(prompts)} answers: {errors[0]}")
        return [str(r.get("content", "")).strip() for r in results], [chosen_confidence(r) for r in results]


def chosen_confidence(result: dict) -> float | None:
    """The lowest probability of a chosen token in a llama-server ``/completion`` result made with ``n_probs``
    (``completion_probabilities``: each token's ``logprob`` before sampling), the end-of-turn token left out as on
    the transformers path; None without them."""
    import math

    probs = result.get("completion_probabilities") or []
    if result.get("stop_type") == "eos":  # the end-of-turn token is listed last (as ""): not part of the answer
        probs = probs[:-1]
    logprobs = [p["logprob"] for p in probs if isinstance(p, dict) and p.get("logprob") is not None]
    return round(math.exp(min(logprobs)), 4) if logprobs else None
