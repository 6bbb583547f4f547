"""Writing an evaluation's outputs: Markdown tables, CSV, PNG figures and HTML pages.

Every file goes through `ecgjax.storage`, so a reader sees a whole file or
none. Markdown is the report's source; `html_page` renders the same text as a
self-contained page a browser opens directly (Python-Markdown with its tables
extension; images stay relative links beside the page).
"""

from __future__ import annotations

import html
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ecgjax.storage import atomic_write  # noqa: E402


def cell(v, floatfmt: str = ".3f") -> str:
  """One table cell: floats formatted, None/NaN as n/a."""
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "n/a"
  return format(v, floatfmt) if isinstance(v, float) else str(v)


def markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
  """Any frame as a GitHub Markdown table (floats formatted, None/NaN as n/a)."""
  lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
  lines += [
    "| " + " | ".join(cell(v, floatfmt) for v in row) + " |" for row in df.itertuples(index=False)
  ]
  return "\n".join(lines) + "\n"


def write_text(path: str, text: str) -> str:
  return atomic_write(path, lambda f: f.write(text))


def to_csv(df: pd.DataFrame, path: str) -> str:
  """Full-precision numbers, empty cells for NaN (one seed's std, a missing bucket)."""
  return atomic_write(path, lambda f: df.to_csv(f, index=False), mode="w")


def save_figure(fig, path: str, dpi: int = 120) -> str:
  """A matplotlib figure as PNG, atomically; the figure is closed either way."""
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi), mode="wb")
  finally:
    plt.close(fig)


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 68rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f5f5f5; padding: 0 0.2rem; }
"""


def html_page(title: str, markdown_text: str) -> str:
  """A standalone HTML page with the same content as `markdown_text`."""
  import markdown as md

  body = md.markdown(markdown_text, extensions=["tables", "fenced_code"])
  return (
    "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
    f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
    f"<body>\n{body}\n</body></html>\n"
  )
