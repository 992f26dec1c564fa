"""The benchmarks' output: a markdown table (printed, optionally written) and a CSV file."""
import csv
import sys
from typing import List, Optional, Sequence, Tuple

from pass_fairseq.files import atomic_write


def to_markdown(columns: Sequence[Tuple[str, str]], rows: List[dict], intro: str) -> str:
    """``intro``, a blank line, then one table line per row; ``columns`` are
    (row key, column title) pairs."""
    lines = [intro, "", "| " + " | ".join(title for _, title in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_tables(markdown: str, rows: List[dict], md_path: Optional[str], csv_path: Optional[str]) -> List[str]:
    """Write the markdown text and the rows (every key a CSV column) where a path is
    given (never half a file: :func:`pass_fairseq.files.atomic_write`), and say so on
    stderr; returns the paths written."""
    written = []
    if md_path:
        with atomic_write(md_path) as f:
            f.write(markdown + "\n")
        written.append(md_path)
    if csv_path:
        with atomic_write(csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(csv_path)
    if written:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return written
