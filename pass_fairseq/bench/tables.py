"""The benchmarks' output: a markdown table (printed, optionally written) and a CSV file."""
import csv
import sys
from typing import List, Optional, Sequence, Tuple


def to_markdown(columns: Sequence[Tuple[str, str]], rows: List[dict], intro: str) -> str:
    """``intro``, a blank line, then one table line per row; ``columns`` are
    (row key, column title) pairs."""
    lines = [intro, "", "| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_tables(markdown: str, rows: List[dict], md_path: Optional[str], csv_path: Optional[str]) -> List[str]:
    """Write the markdown text and the rows (every key a CSV column) where a path is
    given, and say so on stderr; returns the paths written."""
    written = []
    if md_path:
        with open(md_path, "w") as f:
            f.write(markdown + "\n")
        written.append(md_path)
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(csv_path)
    if written:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return written
