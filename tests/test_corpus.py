import re

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


def test_read_corpus_reads_every_text_file_and_skips_binary_with_reasons(tmp_path):
    (tmp_path / "good.md").write_text("# Good\n\nText about things.\n", encoding="utf-8")
    (tmp_path / "latin1.md").write_bytes("# Café\n\nCafé au lait, crème brûlée, naïve déjà vu.\n".encode("latin-1"))
    (tmp_path / "bin.md").write_bytes(b"\x00\x01\x02binary\xff\xfe\x00\x9c" * 50)
    (tmp_path / "empty.md").write_text("---\ntitle: x\n---\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored by the include globs")
    sub = tmp_path / "drafts"
    sub.mkdir()
    (sub / "wip.mdx").write_text("# WIP\n\nDraft.\n")
    docs, report = corpus.read_corpus(tmp_path, ["**/*.md", "**/*.mdx"], ["drafts/**"])
    assert [d.path for d in docs] == ["good.md", "latin1.md"]
    assert "au lait" in docs[1].text and "Caf" in docs[1].title
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons["bin.md"].startswith("binary content")
    assert reasons["empty.md"] == "empty after cleaning"
    assert report.files_seen == 4
    table = {f["path"]: f for f in report.files}
    assert table["good.md"]["status"] == "used" and table["good.md"]["encoding"] == "utf-8"
    assert table["bin.md"]["status"] == "skipped" and table["bin.md"]["reason"].startswith("binary")


ZH_DOC = ("# 安装指南\n\n本文介绍如何安装仿真平台。首先下载安装包，然后运行安装程序。默认端口为 8080，"
          "步长设置为 0.01 秒。\n\n## 参数设置\n\n在参数面板中设置仿真时长与输出通道，点击运行开始仿真。\n")


@pytest.mark.parametrize("encoding,expected", [("gbk", "gb18030"), ("gb18030", "gb18030"), ("utf-16", "utf-16"),
                                               ("utf-16-le", "utf-16-le"), ("utf-8-sig", "utf-8-sig")])
def test_chinese_docs_in_windows_encodings_are_decoded_and_chunked(tmp_path, encoding, expected):
    """A Chinese doc saved as GBK or UTF-16 (common for docs exported on Windows) reaches 02 intact, and the
    report says which encoding was used."""
    (tmp_path / "guide.md").write_bytes(ZH_DOC.encode(encoding))
    docs, report = corpus.read_corpus(tmp_path, ["**/*.md"], [])
    assert len(docs) == 1 and not report.skipped
    assert "默认端口为 8080" in docs[0].text and docs[0].title == "安装指南"
    assert report.files[0]["encoding"] == expected
    chunks = corpus.chunk_corpus(docs, 256, 8)
    assert chunks and chunks[0].lang == "zh" and "步长设置为 0.01 秒" in chunks[0].text


def test_a_10_mb_single_file_manual_is_read_and_chunked_whole(tmp_path):
    """Files over the old 2 MB cut were skipped whole; now the limit is synth.max_file_mb (default 50)."""
    section = ("## Section {i}\n\nThe parameter `p{i}` sets the limit of stage {i} to {i} units. "
               + "It is read once at start-up and applies to every job of that stage. " * 30 + "\n\n")
    text = "# Manual\n\n" + "".join(section.format(i=i) for i in range(4800))
    (tmp_path / "manual.md").write_text(text, encoding="utf-8")
    size = (tmp_path / "manual.md").stat().st_size
    assert size > 10_000_000
    docs, report = corpus.read_corpus(tmp_path, ["**/*.md"], [])
    assert len(docs) == 1 and report.files[0]["bytes"] == size
    chunks = corpus.chunk_corpus(docs, 384, 24)
    assert len(chunks) > 4000
    assert "`p0`" in chunks[0].text and chunks[-1].breadcrumb == ["Manual", "Section 4799"]
    assert any("`p4799`" in c.text for c in chunks[-3:])
    docs, report = corpus.read_corpus(tmp_path, ["**/*.md"], [], max_file_mb=5)
    assert not docs and "synth.max_file_mb" in report.skipped[0]["reason"]


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


def test_image_sizes_html_tables_and_slot_tags_do_not_become_facts():
    """The CloudPSS docs write `![caption =x350](…)` and HTML tables and `<slot>` tags: the size suffix became a
    "fact" (`… 是多少？ => x350`) and tags reached the chunks. Captions stay, sizes and tags go, tables become
    Markdown tables; code blocks are left alone."""
    text = ("# 设置\n\n![同步发电机初始化设置 =x350](./setting1.png)\n\n![图 =300x200](a.png)\n\n"
            "<table>\n  <tr>\n    <td>**模块**</td>\n    <td>配置项</td>\n  </tr>\n  <tr>\n    <td rowspan=\"2\">样式</td>"
            "\n    <td>字体 <kbd>Ctrl</kbd> | 粗细</td>\n  </tr>\n</table>\n\n<slot class=\"model-parameters\">参数表</slot>\n\n"
            "```html\n<table><tr><td>keep</td></tr></table>\n```\n")
    _, body = corpus.clean_markdown(text)
    assert "同步发电机初始化设置" in body and "x350" not in body and "300x200" not in body
    assert "| **模块** | 配置项 |" in body and "| 样式 | 字体 Ctrl \\| 粗细 |" in body
    assert "<slot" not in body and "参数表" in body and "<kbd>" not in body
    assert "<table><tr><td>keep</td></tr></table>" in body


def test_cloudpss_chunks_carry_no_image_sizes_or_html(cloudpss):
    docs, _ = corpus.read_corpus(cloudpss, ["**/*.md", "**/*.mdx"], [])
    for c in corpus.chunk_corpus(docs, 384, 24):
        prose = re.sub(r"```.*?```", "", c.text, flags=re.S)
        assert not re.search(r"=\s*x\d+", prose), c.text[:200]
        assert not re.search(r"</?(slot|td|tr|table|kbd)\b", prose), c.text[:200]
