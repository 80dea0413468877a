"""Self-contained HTML pages (the report's, the grid's): inline CSS, pictures as data URIs, no
script, so that one file opens offline and shows everything. Every text is escaped: class names,
model names and params are the user's."""

from __future__ import annotations

import base64
from html import escape

CSS = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #ddd}"
    "td{text-align:right}td:nth-child(2){text-align:left}th{background:#f3f3f3}"
    "section{border-top:2px solid #888;margin-top:2.5em}img{display:block;max-width:100%;margin:1em 0}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dt{color:#666}dd{margin:0}"
)


def img(data: bytes, alt: str, mime: str = "image/png") -> str:
    """An <img> that carries its picture (PNG, or `mime`)."""
    return f'<img alt="{escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def table(headers: list[str], rows: list[list[str]], *, id: str = "", caption: str = "") -> str:  # noqa: A002 (the HTML attribute)
    """A plain table of text cells (each escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    attributes = f' id="{escape(id)}"' if id else ""
    caption = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table{attributes}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def document(title: str, parts: list[str]) -> str:
    """The whole page: `title` (text) as its title, `parts` (HTML) one after another."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta '
        f'charset="utf-8"><title>{escape(title)}</title><style>{CSS}</style></head><body>\n'
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
