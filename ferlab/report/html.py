"""One static HTML page per results folder: every table, every figure, links to the CSV / LaTeX / Markdown files.

No server, no JavaScript library: the page opens from the file system (or from S3 / a web server) as it is. A few
lines of inline script check, once the page has loaded, that every figure decoded; a missing one is named in a red
banner for the reader, and the same result is written to the page's #ferlab-check element, which the browser test
reads.
"""

from __future__ import annotations

import html
import os

CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.getElementById("ferlab-check");
  out.setAttribute("data-images", String(imgs.length));
  out.setAttribute("data-broken", broken.map(function (i) { return i.getAttribute("src"); }).join(" "));
  out.setAttribute("data-tables", String(document.querySelectorAll("table.ferlab").length));
  // what the browser test checks against the window: nothing wider than the page (no horizontal scroll)
  out.setAttribute("data-width", String(document.documentElement.scrollWidth));
  out.setAttribute("data-view", String(window.innerWidth));
  out.setAttribute("data-done", "1");
  if (broken.length) {
    out.textContent = "Figures that did not load: " + out.getAttribute("data-broken");
    out.className = "broken";
  }
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table.ferlab { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
table.ferlab th, table.ferlab td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
table.ferlab td:first-child, table.ferlab th:first-child { text-align: left; }
table.ferlab th { background: #f0f3f7; }
p.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
div.wide { max-width: 100%; overflow-x: auto; }
details summary { cursor: pointer; color: #1f6fb4; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figure img { max-width: 520px; border: 1px solid #eee; }
figure.wide img { max-width: 1000px; }
#ferlab-check.broken { background: #c62828; color: white; padding: 0.5em; }
.links a { margin-right: 0.8em; font-size: 0.85em; }
"""


WIDE = ("learning_curves", "optimisation_history", "attention", "parallel_coordinates", "knob_slices", "_curves")  # drawn large


def table_html(df, css_class: str = "ferlab") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return "" if v is None else str(v)


def write_page(out_dir: str, title: str, intro: list[str], sections: list[dict], figures: list[tuple[str, str]],
               skipped: list[str]) -> str:
    """sections: {"title", "table_html", "more_html" (optional: every column, folded), "notes", "files": {label:
    relative path}}; figures: (relative PNG path,
    caption). Returns the page's path."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             '<div id="ferlab-check"></div>']
    parts += [f"<p>{html.escape(line)}</p>" for line in intro]
    for s in sections:
        parts.append(f"<h2>{html.escape(s['title'])}</h2>")
        parts.append(f'<div class="wide">{s["table_html"]}</div>')
        if s.get("more_html"):
            parts.append(f'<details><summary>every column</summary><div class="wide">{s["more_html"]}</div>'
                         f'</details>')
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.get("notes", [])]
        links = " ".join(f'<a href="{html.escape(p)}">{html.escape(label)}</a>' for label, p in s["files"].items())
        parts.append(f'<p class="links">{links}</p>')
    if figures:
        parts.append("<h2>Figures</h2>")
        for src, caption in figures:
            svg = src[:-4] + ".svg"
            big = ' class="wide"' if any(w in src for w in WIDE) else ""
            parts.append(f'<figure{big}><a href="{html.escape(svg)}"><img src="{html.escape(src)}" '
                         f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>')
    if skipped:
        parts.append("<h2>Not drawn</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>")
    parts.append(f"<script>{CHECK_SCRIPT}</script></body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
