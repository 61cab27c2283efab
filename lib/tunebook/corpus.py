"""02, part 1 — read a folder of Markdown/MDX docs, clean them, and cut them into heading-aware chunks.

Cleaning keeps the text a reader sees (front-matter title, admonition text, image alt text, link text) and drops
MDX machinery (``import``/``export`` lines, JSX tags, HTML comments). Chunking parses Markdown with markdown-it-py
into sections and blocks; blocks (paragraphs, lists, code fences, tables) are packed into chunks within a token
budget, so a code block or table is never cut unless it alone exceeds the budget.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml
from markdown_it import MarkdownIt

from .text import CJK as _CJK

MAX_FILE_MB = 50.0  # default of synth.max_file_mb: a long single-file manual still fits
_DETECT_BYTES = 256 * 1024  # the encoding is detected on the first 256 KiB

TokenCounter = Callable[[str], int]


@dataclass
class Doc:
    path: str  # relative to the corpus root
    title: str
    text: str  # cleaned Markdown


@dataclass
class Chunk:
    id: str
    source: str
    title: str
    breadcrumb: list[str]
    text: str
    tokens: int
    lang: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CorpusReport:
    root: str
    files_seen: int = 0
    files_used: int = 0
    skipped: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # every file seen: path, bytes, status, encoding or reason


# ---- reading ------------------------------------------------------------------------------------------


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    for pat in patterns:
        if fnmatch.fnmatch(rel, pat) or (pat.startswith("**/") and fnmatch.fnmatch(rel, pat[3:])):
            return True
    return False


def decode(raw: bytes) -> tuple[str | None, str]:
    """``(text, encoding)`` of a text file in any common encoding — UTF-8 (with or without BOM), UTF-16/32,
    GB18030/GBK (Chinese docs saved on Windows), Big5, Shift-JIS, Latin code pages … detected by
    charset-normalizer; ``(None, reason)`` for binary content."""
    import codecs

    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(enc), enc
            except UnicodeDecodeError:
                break
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer

    sample = raw[:_DETECT_BYTES]
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        return None, "binary content (no text encoding fits)"
    enc = best.encoding
    if enc in ("gb2312", "gbk"):
        enc = "gb18030"  # the superset: rare characters outside GBK decode too
    if b"\x00" in sample and not enc.startswith("utf_16") and not enc.startswith("utf_32"):
        return None, "binary content"
    text = raw.decode(enc, errors="replace")
    return text, enc.replace("_", "-")


def read_corpus(root: Path, include: list[str], exclude: list[str],
                max_file_mb: float = MAX_FILE_MB) -> tuple[list[Doc], CorpusReport]:
    """Every matching file as a cleaned :class:`Doc`, whatever its text encoding; the report lists each file with
    its size, status and the encoding used (or why it was skipped: binary, empty, unreadable, over the size
    limit ``max_file_mb``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist (set `corpus` or pass --corpus)")
    report = CorpusReport(root=str(root))
    docs: list[Doc] = []
    limit = int(max_file_mb * 1_000_000)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if not _matches(rel, include) or _matches(rel, exclude):
            continue
        report.files_seen += 1
        reason, enc, size = None, "", 0
        try:
            size = path.stat().st_size
            if size > limit:
                reason = f"too large ({size / 1e6:.1f} MB > synth.max_file_mb {max_file_mb:g})"
            else:
                text, enc = decode(path.read_bytes())
                if text is None:
                    reason, enc = enc, ""
        except OSError as e:
            reason = f"unreadable: {e.strerror or e}"
        if reason is None:
            title, body = clean_markdown(text)
            if not body.strip():
                reason = "empty after cleaning"
            else:
                docs.append(Doc(path=rel, title=title or path.stem, text=body))
        if reason:
            report.skipped.append({"path": rel, "reason": reason})
        report.files.append({"path": rel, "bytes": size, "status": "skipped" if reason else "used",
                             "encoding": enc, "reason": reason or ""})
    report.files_used = len(docs)
    return docs, report


# ---- cleaning -----------------------------------------------------------------------------------------

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_MDX_IMPORT = re.compile(r"^\s*(import\s.+\sfrom\s.+|import\s+['\"].+['\"];?|export\s+(default\s+)?(const|function|let|var|\{).*)$")
_JSX_TAG = re.compile(r"</?[A-Z][\w.]*(\s+[^<>]*?)?\s*/?>")
_HTML_TAG = re.compile(r"</?(div|span|br|p|details|summary|center|font|img|slot|template|section|figure|figcaption|"
                       r"kbd|b|i|u|em|strong|sup|sub|mark|small|a|h[1-6]|table|thead|tbody|tr|td|th|ul|ol|li|hr|"
                       r"video|audio|source|iframe|picture)(\s[^<>]*)?/?>", re.I)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_IMAGE_SIZE = re.compile(r"\s*=\s*(\d*x\d*|\d+|size)\s*$", re.I)  # "![caption =x350](…)": a size, not text
_HTML_TABLE = re.compile(r"<table\b[^>]*>(.*?)</table>", re.I | re.S)
_HTML_ROW = re.compile(r"<tr\b[^>]*>(.*?)</tr>", re.I | re.S)
_HTML_CELL = re.compile(r"<t[dh]\b[^>]*>(.*?)</t[dh]>", re.I | re.S)
_FENCE_BLOCK = re.compile(r"^(\s*(```|~~~).*?^\s*\2)", re.M | re.S)


def _html_table(m: re.Match) -> str:
    """An HTML ``<table>`` as a Markdown table (chunking then keeps it whole, and its cells stay in rows)."""
    rows = []
    for row in _HTML_ROW.findall(m.group(1)):
        cells = [re.sub(r"\s+", " ", _HTML_TAG.sub("", c)).strip().replace("|", "\\|") for c in _HTML_CELL.findall(row)]
        if cells:
            rows.append(cells)
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n\n" + "\n".join(lines) + "\n\n"


def _tables_outside_fences(text: str) -> str:
    parts = _FENCE_BLOCK.split(text)
    out, i = [], 0
    while i < len(parts):
        out.append(_HTML_TABLE.sub(_html_table, parts[i]))
        if i + 1 < len(parts):
            out.append(parts[i + 1])  # the fenced block, untouched (split() also returns its marker: skipped)
        i += 3
    return "".join(out)
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\([^)]*\)")
_ADMON_OPEN = re.compile(r"^(\s*):::+\s*(\w+)\s*(.*)$")
_ADMON_CLOSE = re.compile(r"^\s*:::+\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_ADMON_LABELS = {"tip": "Tip", "note": "Note", "info": "Info", "warning": "Warning", "caution": "Caution",
                 "danger": "Danger", "important": "Important"}


def clean_markdown(text: str) -> tuple[str, str]:
    """Return ``(title, cleaned_markdown)``; code fences are left untouched."""
    title = ""
    m = _FRONT.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1)) or {}
            if isinstance(meta, dict) and meta.get("title"):
                title = str(meta["title"]).strip()
        except yaml.YAMLError:
            pass
        text = text[m.end():]
    text = _COMMENT.sub("", text)
    text = _tables_outside_fences(text)
    out: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence:
            out.append(line)
            continue
        if _MDX_IMPORT.match(line):
            continue
        am = _ADMON_OPEN.match(line)
        if am:
            label = _ADMON_LABELS.get(am.group(2).lower(), am.group(2).capitalize())
            rest = am.group(3).strip()
            out.append(f"{am.group(1)}**{label}{': ' + rest if rest else ''}**")
            continue
        if _ADMON_CLOSE.match(line):
            continue
        line = _IMAGE.sub(lambda mm: _IMAGE_SIZE.sub("", mm.group(1)), line)
        line = _LINK.sub(lambda mm: mm.group(1), line)
        line = _JSX_TAG.sub("", line)
        line = _HTML_TAG.sub("", line)
        out.append(line.rstrip())
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"
    if not title:
        h1 = re.search(r"^#\s+(.+)$", cleaned, re.M)
        title = h1.group(1).strip() if h1 else ""
    return title, cleaned


# ---- chunking -----------------------------------------------------------------------------------------


def language(text: str) -> str:
    letters = re.findall(r"[A-Za-z]+", text)
    cjk = len(_CJK.findall(text))
    return "zh" if cjk >= max(10, len(letters) * 0.5) else "en"


def approx_tokens(text: str) -> int:
    """Offline estimate when the teacher's tokenizer is not reachable: CJK chars + 1.3 per word."""
    cjk = len(_CJK.findall(text))
    words = len(re.findall(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_\u3400-\u9fff\uf900-\ufaff]", text))
    return cjk + int(words * 1.3) + 1


@dataclass
class _Block:
    text: str
    kind: str  # paragraph | fence | table | list | other


@dataclass
class _Section:
    breadcrumb: list[str]
    blocks: list[_Block]


def sections(doc: Doc) -> list[_Section]:
    md = MarkdownIt("commonmark").enable("table")
    lines = doc.text.splitlines()
    tokens = md.parse(doc.text)
    out: list[_Section] = []
    crumbs: list[tuple[int, str]] = []
    current = _Section([doc.title], [])
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == "heading_open" and t.level == 0:
            if current.blocks:
                out.append(current)
            level = int(t.tag[1])
            heading = tokens[i + 1].content.strip()
            crumbs = [c for c in crumbs if c[0] < level] + [(level, heading)]
            trail = [doc.title] + [h for _, h in crumbs if h != doc.title]
            current = _Section(trail, [])
            i += 3
            continue
        if t.level == 0 and t.map and (t.nesting == 1 or t.type in ("fence", "code_block", "html_block", "hr")):
            a, b = t.map
            kind = {"fence": "fence", "code_block": "fence", "table_open": "table", "bullet_list_open": "list",
                    "ordered_list_open": "list", "paragraph_open": "paragraph"}.get(t.type, "other")
            text = "\n".join(lines[a:b]).strip()
            if text:
                current.blocks.append(_Block(text, kind))
            # skip to the matching close token
            if t.nesting == 1:
                i += 1
                while i < len(tokens) and not (tokens[i].level == 0 and tokens[i].nesting == -1):
                    i += 1
                i += 1
                continue
        i += 1
    if current.blocks:
        out.append(current)
    return out


_SENT = re.compile(r"(?<=[。！？!?；;])|(?<=\.)\s+")


def _split_block(block: _Block, budget: int, count: TokenCounter) -> list[_Block]:
    """Split one over-budget block: code/tables by lines, prose by sentences."""
    if count(block.text) <= budget:
        return [block]
    units = block.text.splitlines() if block.kind in ("fence", "table", "list") else [s for s in _SENT.split(block.text) if s and s.strip()]
    joiner = "\n" if block.kind in ("fence", "table", "list") else " "
    pieces: list[_Block] = []
    cur: list[str] = []
    for u in units:
        trial = joiner.join(cur + [u])
        if cur and count(trial) > budget:
            pieces.append(_Block(joiner.join(cur), block.kind))
            cur = [u]
        else:
            cur.append(u)
    if cur:
        pieces.append(_Block(joiner.join(cur), block.kind))
    return pieces


def chunk_doc(doc: Doc, budget: int, min_tokens: int, count: TokenCounter = approx_tokens) -> list[Chunk]:
    chunks: list[Chunk] = []
    crumb: list[str] = []
    parts: list[str] = []

    def flush() -> None:
        nonlocal parts
        if not parts:
            return
        text = "\n\n".join(parts).strip()
        parts = []
        n = count(text)
        if chunks and n < min_tokens and chunks[-1].source == doc.path and chunks[-1].tokens + n <= budget * 1.25:
            prev = chunks[-1]
            prev.text = prev.text + "\n\n" + text
            prev.tokens = count(prev.text)
            prev.id = _chunk_id(doc.path, prev.text)
            return
        chunks.append(Chunk(id=_chunk_id(doc.path, text), source=doc.path, title=doc.title, breadcrumb=list(crumb),
                            text=text, tokens=n, lang=language(text)))

    for sec in sections(doc):
        heading = " > ".join(sec.breadcrumb[1:])
        sec_blocks = [b for blk in sec.blocks for b in _split_block(blk, budget, count)]
        for j, blk in enumerate(sec_blocks):
            prefix = f"[{heading}]\n" if heading and j == 0 else ""
            candidate = "\n\n".join(parts + [prefix + blk.text])
            if parts and count(candidate) > budget:
                flush()
                prefix = f"[{heading}]\n" if heading else ""
            if not parts:
                crumb = sec.breadcrumb
            parts.append(prefix + blk.text)
    flush()
    return chunks


def _chunk_id(source: str, text: str) -> str:
    return hashlib.sha256(f"{source}\n{text}".encode()).hexdigest()[:16]


def chunk_corpus(docs: list[Doc], budget: int, min_tokens: int, count: TokenCounter = approx_tokens) -> list[Chunk]:
    out: list[Chunk] = []
    for d in docs:
        out.extend(chunk_doc(d, budget, min_tokens, count))
    return out
