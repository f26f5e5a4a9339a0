"""What the report tests share: a page's inline images, and the check that a page stands alone
(every image inline and decodable, nothing fetched, under 5 MB). Imported by test modules
(pytest puts tests/ on the path)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from PIL import Image

IMG = re.compile(r'<img src="data:image/(png|jpeg);base64,([^"]+)" alt="([^"]*)"')


def inline_images(html: str) -> dict[str, Image.Image]:
    """alt text -> the decoded image, for every <img> of the page."""
    found = {}
    for _, data, alt in IMG.findall(html):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        found[alt] = image
    return found


def assert_self_contained(page: Path) -> str:
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 5 * 1024 * 1024
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert len(inline_images(html)) == len(sources)
    return html
