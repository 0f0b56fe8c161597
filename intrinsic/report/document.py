"""The document model of every report, and its two renderers (Markdown and HTML).

A report is a list of blocks: `Heading`, `Paragraph`, `Bullets`, `Table`, `Image`. The probe
report and the study report build such a list; `render_markdown` and `render_html` turn it into
text, so both reports share one look and one set of escaping rules. Table cells are formatted to
text when the table is built (`Table.of_records` with `format.cell`), so the two renderers and
any other view of the same rows show the same strings.

Inline markup in headings, paragraphs and list items: `code`, **bold**, *italic* (Markdown
as written; converted for HTML after escaping). Images are PNG files: linked by file name from
Markdown (the file sits beside report.md), inlined as base64 in HTML (one self-contained file).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .format import cell


@dataclass(frozen=True)
class Heading:
    """A section title."""

    level: int  # 1 = document title, 2 = section, ...
    text: str  # inline markup allowed


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; a newline inside `text` is a line break within it."""

    text: str  # inline markup allowed


@dataclass(frozen=True)
class Bullets:
    """An unordered list."""

    items: tuple[str, ...]  # one entry per item, inline markup allowed


@dataclass(frozen=True)
class Table:
    """A table of text cells, optionally with a bold title above it (a caption in HTML).

    A titled table without rows renders as "**title**: none."; an untitled one keeps its header.
    """

    columns: tuple[str, ...]  # header
    rows: tuple[tuple[str, ...], ...]  # formatted cells, one tuple per row, in column order
    title: str | None = None  # None: no title (e.g. the table sits right under a heading)

    @classmethod
    def of_records(cls, title: str | None, columns: Sequence[str], records: Sequence[dict[str, Any]],
                   fmt: Callable[[Any], str] = cell) -> Table:
        """A table from dict rows (missing keys are None), each value written with `fmt`."""
        return cls(tuple(columns), tuple(tuple(fmt(r.get(c)) for c in columns) for r in records), title)


@dataclass(frozen=True)
class Image:
    """A PNG file shown in the document."""

    path: Path  # the PNG; Markdown links its file name, HTML inlines its bytes
    alt: str  # alternative text
    caption: str | None = None  # shown under the image (italic in Markdown)


Block = Heading | Paragraph | Bullets | Table | Image


def _md_table(t: Table) -> str:
    if t.title is not None and not t.rows:
        return f"**{t.title}**: none."
    lines = [f"**{t.title}**", ""] if t.title is not None else []
    lines += ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def _md_block(b: Block) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + b.text
    if isinstance(b, Paragraph):
        return b.text
    if isinstance(b, Bullets):
        return "\n".join(f"- {i}" for i in b.items)
    if isinstance(b, Table):
        return _md_table(b)
    if isinstance(b, Image):
        img = f"![{b.alt}]({Path(b.path).name})"
        return img if b.caption is None else f"{img}\n\n*{b.caption}*"
    raise TypeError(f"not a document block: {b!r}")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The document as Markdown: blocks separated by a blank line, ending with a newline."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** / *italic* as in the Markdown; newlines become <br>."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", t).replace("\n", "<br>\n")


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    caption = "" if t.title is None else f"<caption>{html.escape(t.title)}</caption>"
    return f"<table>{caption}<tr>{head}</tr>{trs}</table>"


def _html_block(b: Block) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_inline(b.text)}</h{b.level}>"
    if isinstance(b, Paragraph):
        return f"<p>{_inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Image):
        data = base64.b64encode(Path(b.path).read_bytes()).decode()
        cap = "" if b.caption is None else f"<figcaption>{html.escape(b.caption)}</figcaption>"
        return f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">{cap}</figure>'
    raise TypeError(f"not a document block: {b!r}")


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
          "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px}"
          "caption{font-weight:bold;text-align:left}img{max-width:100%}")


def render_html(blocks: Sequence[Block], title: str | None = None) -> str:
    """The document as one self-contained HTML page (images inlined); `title` sets the page's <title>."""
    head = "<meta charset='utf-8'>" + ("" if title is None else f"<title>{html.escape(title)}</title>")
    body = "".join(_html_block(b) for b in blocks)
    return f"<!doctype html><html><head>{head}<style>{_STYLE}</style></head><body>{body}</body></html>\n"


__all__ = ["Block", "Bullets", "Heading", "Image", "Paragraph", "Table", "render_html", "render_markdown"]
