"""The typed sections of a run's settings, one per notebook: ``serve`` (01), ``synth`` (02), ``inspect`` (03),
``train`` (04), ``evaluate`` (05). Each field is a knob with its default and, in a comment, why that default
(the measurement behind it). :mod:`tunebook.settings` puts them together, loads profiles and checks the rules
across sections; import them from there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .paths import prompt_file


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServeSettings(_Section):
    backend: Literal["llama.cpp", "vllm", "openai"] = "llama.cpp"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    port_fallback: bool = True
    allow_public_bind: bool = False
    parallel: int = Field(2, ge=1, le=256)
    ctx_per_slot: int = Field(4096, ge=256)
    threads: int = Field(0, ge=0)
    gpu_layers: int = Field(0, ge=-1)  # llama.cpp on a GPU box (a CUDA build): layers to offload, -1 all, 0 none
    # llama.cpp's speculative decoding by n-gram lookup in the prompt (the QA writer and the judge copy from it):
    # 1.29x on the judge's work, 47 of 48 outputs identical (benchmarks/teacher_speculative.py); "none" turns it off
    spec_type: str = "ngram-simple"
    ready_timeout: float = Field(300.0, gt=0)
    vllm_python: str = "python"
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    max_model_len: int = Field(8000, ge=256)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    swap_space: int = Field(0, ge=0)
    disable_log_requests: bool = False
    served_model_name: str = ""
    reasoning_parser: str = ""
    extra_args: list[str] = []
    base_url: str = ""
    extra_base_urls: list[str] = []
    api_model: str = ""
    api_key_env: str = ""
    smoke_prompt: str = "简单解释一下量子计算"
    smoke_max_tokens: int = Field(96, ge=1)

    @field_validator("api_key_env")
    @classmethod
    def _env_name_only(cls, v: str) -> str:
        if v and not v.replace("_", "").isalnum():
            raise ValueError("must be the NAME of an environment variable holding the key, not the key itself")
        return v


class SynthSettings(_Section):
    include: list[str] = ["**/*.md", "**/*.mdx"]
    exclude: list[str] = []
    max_file_mb: float = Field(50.0, gt=0)
    chunk_tokens: int = Field(384, ge=32)
    min_chunk_tokens: int = Field(24, ge=1)
    questions_per_100_tokens: float = Field(1.2, gt=0)
    min_questions: int = Field(1, ge=1)
    max_questions: int = Field(4, ge=1)
    max_chunks: int = Field(0, ge=0)
    mode: Literal["closed_book", "open_book"] = "closed_book"
    paraphrases: int = Field(2, ge=0, le=8)  # rewordings per question: one for the recall eval, the rest trained on (1 → 2: demo recall 4.05 → 4.29, exact 0.79 → 0.84, 02 +~110 s)
    paraphrase_retries: int = Field(0, ge=0, le=3)  # asks again (another seed) while fewer than `paraphrases` are new wordings: the teacher often copies the question
    abstain_questions: int = Field(0, ge=0, le=4)  # per chunk: questions on its topic that the docs do not answer
    temperature: float = Field(0.3, ge=0)
    max_tokens: int = Field(768, ge=16)
    max_question_chars: int = Field(200, ge=16)
    max_answer_chars: int = Field(600, ge=16)
    request_timeout: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)
    attempts: int = Field(3, ge=1)
    concurrency: int = Field(0, ge=0)
    reproducible: bool = False


class InspectSettings(_Section):
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    unseen_fold: int = Field(0, ge=0)  # which eval_fraction-sized run of the shuffled chunks is held out (k: disjoint from 0)
    recall_fraction: float = Field(1.0, ge=0, le=1)
    recall_wordings: int = Field(1, ge=1, le=4)  # reworded questions asked per recalled pair (needs synth.paraphrases)
    min_eval: int = Field(2, ge=1)
    min_answer_chars: int = Field(2, ge=1)
    questions_only: bool = True  # drop rows whose "question" is a statement or a heading breadcrumb
    max_tokens: int = Field(384, ge=16)
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    min_grounding: float = Field(0.3, ge=0, le=1)
    judge: bool = False
    min_judge: int = Field(3, ge=0, le=5)
    train_rewordings: int = Field(1, ge=0, le=7)  # extra training items per pair: its other rewordings (needs synth.paraphrases >= 2)
    abstain_eval_fraction: float = Field(0.5, ge=0, le=1)  # of the "docs don't say" items, asked in the outofdocs split
    abstain_train: bool = True  # the rest are trained on (answer: the docs don't cover it)
    reverse_train: bool = False  # each trained pair once more the other way round: its answer with the asked-about name blanked
    sentence_answers: bool = False  # bare train answers ("4,000") restated by the teacher as a sentence naming what was asked
    # facts whose questions differ in one name (buses / generators per model) get one teacher-written item stating
    # both: demo data 4 items, recall 4.52 -> 4.76 but its target (generators) right -> wrong; CloudPSS 1 item (session 15)
    sibling_contrasts: bool = False
    abstain_swaps: float = Field(0.0, ge=0, le=1)  # share of trained pairs naming a `setting`/code that get a twin about a name the corpus lacks, answered "the docs don't cover this"
    show_samples: int = Field(8, ge=0)

    @property
    def needs_teacher(self) -> bool:
        """03 asks the teacher from 01: to judge pairs, restate answers or write sibling contrasts."""
        return self.judge or self.sentence_answers or self.sibling_contrasts


class TrainSettings(_Section):
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    epochs: float = Field(5.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    # small data, few steps: 3e-4 did not even fit the train answers; 1e-3 fit them and made the student forget most
    # (general change -1.67 on samples/docs); 5e-4 halves the forgetting for 0.3 of recall (RESULTS.md, session 21)
    learning_rate: float = Field(5e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(384, ge=32)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_rslora: bool = False
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # LoRA only on the layers from this one up (0: all): the bottom layers frozen, against forgetting ("spurious
    # forgetting", Zheng et al. 2025: fine-tuning first breaks the lower layers' alignment of the task)
    lora_first_layer: int = Field(0, ge=0)
    system_prompt: str = ""
    eval_steps: int = Field(0, ge=0)
    save_steps: int = Field(10, ge=1)
    token_budget: int = Field(8192, ge=256)
    # share of the train set: general prompts answered by the base student itself, against forgetting (session 20:
    # general change −1.83 → −1.17 samples/docs, −1.50 → −1.00 CloudPSS, recall unchanged, +43–70 s training)
    replay_fraction: float = Field(0.1, ge=0, lt=0.5)
    # replay trained to the base's whole distribution, KL times this (distill.py; transformers + PEFT; 0: CE). 4 vs 0,
    # 3 trainings each, samples/docs: general change −1.03 → −0.60, recall 4.43 → 4.32; CloudPSS −0.56 → −0.44, 4.07 → 3.97
    replay_kl: float = Field(4.0, ge=0)
    prompt_kl: float = Field(0.0, ge=0)  # with replay_kl: the KL at the doc rows' prompt positions too (LwF on the questions)
    replay_rotate: bool = False  # each pass over the train split meets its own replay prompts (ceil(epochs) x the rows asked)
    replay_prompts: str = "replay.yaml"  # the replay's prompts, in the order asked: a file in params/prompts or a path

    # each train answer restated first by the base student in its own sentence (restyle.py): recall 4.38 -> 3.65 (s22)
    restyle_answers: bool = False
    # NEFTune (Jain et al. 2023): noise of this scale on the input embeddings while training (0: off). alpha 5, session
    # 15: recall unchanged on both corpora; fine-tuned + RAG 4.34 -> 4.66 (demo), 3.58 -> 3.55 (CloudPSS, more invented)
    neftune_alpha: float = Field(0.0, ge=0.0, le=50.0)
    # share of trained facts trained once more with 05's RAG prompt (their retrieved chunk in it): reading, not recall
    context_fraction: float = Field(0.0, ge=0, le=1)
    context_lines: int = Field(0, ge=0)  # lines of the chunk kept either side of the answer's line (0: the whole chunk)
    context_swaps: float = Field(0.0, ge=0, le=1)  # share of context rows with the answer's numbers changed in chunk and answer (teaches reading)
    context_distractors: float = Field(0.0, ge=0, le=1)  # share of context rows given wrong chunks only, answer unchanged (answer from memory when retrieval misses)
    # probe and repair (04): every trained fact asked in a new wording; the ones missed are trained again in it
    repair_rounds: int = Field(0, ge=0, le=3)
    repair_epochs: float = Field(1.0, gt=0)  # passes over one repair round's items (every fact + the misses)
    # the saved adapter's update times this (1: as trained; 0.5: halfway from the base to the fine-tuned weights):
    # weight-space interpolation against forgetting (WiSE-FT); 05, the merged and the GGUF exports all use it
    adapter_scale: float = Field(1.0, gt=0, le=1.0)
    load_in_4bit: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where fast (GPU; CPU with AMX / AVX-512 BF16)
    threads: int = Field(0, ge=0)
    num_gpus: int = Field(1, ge=1)
    seed: int | None = None  # LoRA init and row order (None: the run's seed); split and eval keep the run's seed

    @field_validator("replay_prompts")
    @classmethod
    def _replay_file_exists(cls, v: str) -> str:  # checked before 01 starts, not when 04 needs it
        if not prompt_file(v).is_file():
            raise ValueError(f"no such file: {prompt_file(v)} (a file in params/prompts, e.g. replay.yaml, or a path)")
        return v


class EvalSettings(_Section):
    max_questions: int = Field(0, ge=0)
    rag: bool = True
    rag_k: int = Field(1, ge=1, le=10)  # chunks in a RAG prompt: 1 halves the prompt of 2 (hit rate 0.71 vs 0.75, demo)
    rag_tokenizer: Literal["jieba", "char2"] = "jieba"
    # fine-tuned + RAG also searches with the student's own closed-book answer (HyDE): hit 0.84 -> 1.00 (README levers)
    draft_search: bool = True
    # the fine-tuned student says "the docs don't cover this" when a token of its answer had a probability below
    # this (0: off); benchmarks/abstain_gate.py: unseen invented values 0.60 -> 0.20 (samples/docs), 0.38 -> 0.12
    abstain_below: float = Field(0.4, ge=0.0, lt=1.0)
    # ... and when every value its answer learned comes from trained pairs whose question shares less than this of the
    # asked question's terms ("366 days", the simulation limit, for the trial period); 0: off (benchmarks/provenance_gate.py)
    provenance_below: float = Field(0.1, ge=0.0, lt=1.0)
    # a fine-tuned + RAG answer that reads its values off its prompt's chunks (each in a sentence about the question)
    # passes both gates: they guard what the student recalls, not what it reads (benchmarks/grounded_gate.py)
    context_grounding: bool = True
    # a gated fine-tuned answer that repeats a trained answer (character ROUGE-L >= 0.8) to a question sharing at least
    # this share of the asked one's terms passes both gates (0: off; provenance.TrainedValues.recites; README levers)
    recited_above: float = Field(0.5, ge=0.0, le=1.0)
    agreement_pass: bool = True  # a gated fine-tuned + RAG answer saying what the passed closed-book one says passes
    # the sixth answerer: the fine-tuned student for questions nearer the train questions than the replay prompts, the
    # base for the rest (scope.py: served beside the base, the adapter need not forget; a merged export still does)
    scope_switch: bool = True
    # RAG prompts: each table row a line with its column names (benchmarks/table_rows.py: +0.22 base, -0.04 tuned: off)
    table_rows: bool = False
    # the fine-tuned student's RAG prompts hold of each chunk only the line best matching the question and its draft,
    # this many lines either side, its heading and table header (retrieval.passage; 0: whole chunks); base + RAG keeps
    # whole chunks. benchmarks/rag_passage.py: 05's answering 1.21x faster, fine-tuned + RAG recall -0.04 / -0.13 n.s.
    rag_lines: int = Field(3, ge=0)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)  # most questions per generate() batch (equal batches); with llama.cpp, the server's parallel slots
    # who answers as the student: transformers, llama.cpp (its GGUF + the LoRA as GGUF; faster on a CPU for short
    # prompts, slower for RAG prompts: benchmarks/eval_engine.py), or hybrid (llama.cpp for the closed-book and general
    # prompts, transformers for the RAG prompts: 05's answering only 1.04x faster over 3 runs, base and general
    # answers worded differently; benchmarks/hybrid_engine.py, RESULTS.md session 32)
    engine: Literal["transformers", "llama.cpp", "hybrid"] = "transformers"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # the transformers answerer's float type (see train.precision)
    engine_port: int = Field(8095, ge=1, le=65535)
    judge: bool = True
    general_check: bool = True
    general_prompts: int = Field(30, ge=0)  # how many of params/prompts/general.yaml to ask (0: all)
    # answer length for the general prompts (0: max_new_tokens): the base student works a sum out before it states
    # it, and cut at 64 tokens it was graded wrong on 5 of 30 (RESULTS.md, session 20)
    general_max_new_tokens: int = Field(128, ge=0)
    export_adapter: bool = True
    export_merged: bool = True
    ask: list[str] = []  # your own questions: 05 answers them four ways after the eval (no reference, so no score)
    gguf_types: list[str] = ["q8_0", "q4_k_m"]
    export_modelfile: bool = True
    verify_gguf: list[str] = ["f16", "q8_0"]  # served back and asked verify_questions (q4_k_m: add it)
    modelfile_gguf: str = "q8_0"
    verify_questions: int = Field(8, ge=0)  # eval questions each served export is asked (0: all): a fidelity check
    verify_port: int = Field(8090, ge=1, le=65535)
    verify_vllm: bool | Literal["auto"] = "auto"  # YAML reads on/off as booleans: True / False / "auto"
    vllm_python: str = ".venv-vllm/bin/python"
    vllm_args: list[str] = []
    vllm_port: int = Field(8091, ge=1, le=65535)
