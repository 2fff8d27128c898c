"""Put a benchmark table into the README between its markers, so it is never typed by hand."""

from __future__ import annotations

import re
from pathlib import Path


def update_readme(path: str, name: str, text: str) -> None:
    """Replace what stands between ``<!-- bench:NAME:start -->`` and ``... end -->``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    readme = Path(path)
    content = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{path} has no {start} ... {end} markers")
    block = f"{start}\n{text.strip()}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, content, count=1))
