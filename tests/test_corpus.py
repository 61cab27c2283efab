import pytest

from tunebook import corpus

MDX = """---
title: 安装指南
sidebar_position: 2
---
import Tabs from '@theme/Tabs';

# Install

<!-- hidden note -->
Some intro with a [link text](https://example.com/x) and ![a diagram](img/图.png).

:::tip Remember
Port **7432** is the default.
:::

<Tabs>
  <TabItem value="a" label="A">Tab body text.</TabItem>
</Tabs>

```python
import os  # code keeps its import and <Tags>
print("x")
```

| key | default |
|-----|---------|
| port | 7432 |
"""


def test_clean_markdown_keeps_what_readers_see():
    title, text = corpus.clean_markdown(MDX)
    assert title == "安装指南"
    assert "sidebar_position" not in text and "import Tabs" not in text and "hidden note" not in text
    assert "link text" in text and "https://example.com" not in text
    assert "a diagram" in text and "img/" not in text
    assert "**Tip: Remember**" in text and ":::" not in text
    assert "<Tabs>" not in text and "<TabItem" not in text and "Tab body text." in text
    assert "import os  # code keeps its import and <Tags>" in text  # fenced code untouched
    assert "| port | 7432 |" in text


def test_read_corpus_skips_bad_files_with_reasons(tmp_path):
    (tmp_path / "good.md").write_text("# Good\n\nText about things.\n", encoding="utf-8")
    (tmp_path / "latin1.md").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "bin.md").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "empty.md").write_text("---\ntitle: x\n---\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored by the include globs")
    sub = tmp_path / "drafts"
    sub.mkdir()
    (sub / "wip.mdx").write_text("# WIP\n\nDraft.\n")
    docs, report = corpus.read_corpus(tmp_path, ["**/*.md", "**/*.mdx"], ["drafts/**"])
    assert [d.path for d in docs] == ["good.md"]
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons["latin1.md"].startswith("not valid UTF-8")
    assert reasons["bin.md"] == "binary content"
    assert reasons["empty.md"] == "empty after cleaning"
    assert report.files_seen == 4


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus folder"):
        corpus.read_corpus(tmp_path / "nope", ["**/*.md"], [])


def _doc(text, path="d.md"):
    title, body = corpus.clean_markdown(text)
    return corpus.Doc(path=path, title=title or "Doc", text=body)


def test_chunks_respect_budget_and_keep_code_blocks_whole():
    para = "Sentence number {i} explains a setting in detail. " * 6
    code = "```bash\n" + "\n".join(f"bwatt run --step {i}" for i in range(12)) + "\n```"
    md = "# Title\n\n## Part A\n\n" + "\n\n".join(para.format(i=i) for i in range(4)) + "\n\n" + code + \
         "\n\n## Part B\n\n### Deep\n\n" + para.format(i=9)
    chunks = corpus.chunk_doc(_doc(md), budget=120, min_tokens=10)
    assert len(chunks) > 2
    for c in chunks:
        assert c.text.count("```") in (0, 2), "a code block was cut"
        assert c.tokens <= 120 or c.text.count("```") == 2
    deep = [c for c in chunks if "Deep" in " > ".join(c.breadcrumb)]
    assert deep and deep[0].breadcrumb[-2:] == ["Part B", "Deep"]
    # ids are stable content hashes
    again = corpus.chunk_doc(_doc(md), budget=120, min_tokens=10)
    assert [c.id for c in chunks] == [c.id for c in again]
    assert len({c.id for c in chunks}) == len(chunks)


def test_oversized_code_block_is_split_by_lines():
    code = "```\n" + "\n".join(f"line {i} " + "x " * 10 for i in range(60)) + "\n```"
    chunks = corpus.chunk_doc(_doc("# T\n\n" + code), budget=80, min_tokens=5)
    assert len(chunks) > 1
    assert all(c.tokens <= 80 for c in chunks)


def test_tiny_sections_are_merged():
    md = "# T\n\n## a\n\nshort.\n\n## b\n\nalso short.\n\n## c\n\ntiny.\n"
    chunks = corpus.chunk_doc(_doc(md), budget=200, min_tokens=10)
    assert len(chunks) == 1 and "tiny." in chunks[0].text


def test_language_detection():
    assert corpus.language("这是一个关于电网仿真的中文段落，包含很多汉字。") == "zh"
    assert corpus.language("This is an English paragraph about grids.") == "en"


def test_sample_corpus_chunks(root):
    docs, report = corpus.read_corpus(root / "samples" / "docs", ["**/*.md"], [])
    assert len(docs) == 6 and not report.skipped
    chunks = corpus.chunk_corpus(docs, 384, 24)
    assert {c.lang for c in chunks} == {"zh", "en"}


def test_cloudpss_sample_never_crashes(cloudpss):
    docs, report = corpus.read_corpus(cloudpss, ["**/*.md", "**/*.mdx"], [])
    assert report.files_seen >= 100 and len(docs) + len(report.skipped) == report.files_seen
    chunks = corpus.chunk_corpus(docs, 384, 24)
    assert len(chunks) >= len(docs)
    for c in chunks:
        assert "import " not in c.text.split("```")[0][:7]
        assert c.text.strip()
