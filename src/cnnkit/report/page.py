"""One self-contained HTML page: headings, key figures, tables and images inlined as data URIs.

Written by hand (html.escape and a little CSS) because the page is small and must open from
file:// with no network and no template engine installed; every image is a base64 PNG or JPEG.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;
padding:1.2rem 1.5rem;color:#1d232a;background:#fafbfc}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}h3{font-size:1rem;margin:1rem 0 .4rem}
.sub{color:#57606a;margin:0 0 1rem}.figures{display:flex;flex-wrap:wrap;gap:.6rem}
.figure{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.5rem .8rem}
.figure b{display:block;font-size:1.25rem}.figure span{color:#57606a;font-size:.8rem}
table{border-collapse:collapse;background:#fff;font-size:.85rem;margin:.3rem 0}
td,th{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:right}
th{background:#f0f3f6}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #d0d7de;background:#fff}
.note{color:#57606a;font-size:.85rem}nav a{margin-right:.8rem;font-size:.85rem}
.scroll{overflow-x:auto;max-width:100%}
.row{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-start}
.row>div{flex:1 1 0;min-width:280px}
code{background:#eef1f4;padding:.05rem .3rem;border-radius:3px;font-size:.85rem}
"""


# a picture larger than this is re-encoded as a JPEG no wider than MAX_SIDE: the page of a run
# on large photos (its augmented batch, its feature maps) stays well under 5 MB
PNG_BUDGET = 300_000
MAX_SIDE = 1600


def compact(data: bytes) -> tuple[bytes, str]:
    """(bytes, mime): a small PNG as it is, a large one as a JPEG (quality 85), scaled down to
    MAX_SIDE on its longer side."""
    if len(data) <= PNG_BUDGET:
        return data, "image/png"
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    smaller = buffer.getvalue()
    return (smaller, "image/jpeg") if len(smaller) < len(data) else (data, "image/png")


def data_uri(image: bytes | Path) -> str:
    """An image (PNG or JPEG bytes, or a file) as a data: URI, compacted (see compact)."""
    data = image.read_bytes() if isinstance(image, Path) else image
    if data[:3] == b"\xff\xd8\xff":
        mime = "image/jpeg"
    else:
        data, mime = compact(data)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_png(fig: Any, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


@dataclass
class Section:
    """One titled part of the page; parts are appended in reading order."""

    title: str
    parts: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")

    def text(self, words: str, note: bool = False) -> Section:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(words)}</p>")
        return self

    def heading(self, words: str) -> Section:
        self.parts.append(f"<h3>{html.escape(words)}</h3>")
        return self

    def figures(self, items: Iterable[tuple[str, Any]]) -> Section:
        """Key numbers in boxes: (label, value) pairs."""
        boxes = "".join(
            f'<div class="figure"><b>{_cell(v)}</b><span>{html.escape(k)}</span></div>'
            for k, v in items
        )
        self.parts.append(f'<div class="figures">{boxes}</div>')
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Section:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows
        )
        self.parts.append(
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
        return self

    def image(self, image: bytes | Path, alt: str) -> Section:
        self.parts.append(f'<p><img src="{data_uri(image)}" alt="{html.escape(alt)}"></p>')
        return self

    def images(self, items: Sequence[tuple[bytes | Path, str]]) -> Section:
        """Images side by side (wrapping on a narrow window)."""
        cells = "".join(
            f'<div><img src="{data_uri(image)}" alt="{html.escape(alt)}"></div>'
            for image, alt in items
        )
        self.parts.append(f'<div class="row">{cells}</div>')
        return self


@dataclass
class Page:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        found = Section(title)
        self.sections.append(found)
        return found

    def image_section(self, title: str, image: Path, alt: str, note: str = "") -> None:
        """A section of one picture (and a note under it), when the picture was drawn."""
        if image.is_file():
            section = self.section(title).image(image, alt)
            if note:
                section.text(note, note=True)

    def render(self) -> str:
        shown = [s for s in self.sections if s.parts]
        nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in shown)
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
            for s in shown
        )
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{html.escape(self.title)}</h1><p class="sub">{html.escape(self.subtitle)}</p>'
            f"<nav>{nav}</nav>{body}</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        """Written to a temporary name and renamed: a reader never sees half a page."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path
