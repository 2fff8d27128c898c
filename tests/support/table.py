"""A markdown table of result rows, for the long runs' scripts (storm, soak, stress)."""

from __future__ import annotations


def markdown(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """``columns`` are (key, title) pairs; a row without a key gets an empty cell."""
    widths = [max(len(title), *(len(str(r.get(k, ""))) for r in rows)) for k, title in columns]
    lines = [
        "| " + " | ".join(t.ljust(w) for (_, t), w in zip(columns, widths, strict=True)) + " |",
        "|-" + "-|-".join("-" * w for w in widths) + "-|",
    ]
    for row in rows:
        cells = (str(row.get(k, "")).ljust(w) for (k, _), w in zip(columns, widths, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
