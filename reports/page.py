"""HTML building blocks of the report: one self-contained page (inline style and script, figures
as data URIs), every piece of text escaped."""

from __future__ import annotations

from html import escape
from typing import Sequence

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1250px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.5em 1em; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
details { margin: 0.4em 0; } summary { cursor: pointer; font-weight: 600; padding: 0.2em 0; }
details > :not(summary) { margin-left: 1em; }
"""

# Run by the browser on load: counts figures that failed to decode (a test loads the page in
# headless Chromium and reads `data-broken-images` from the DOM) and warns the reader visibly.
SCRIPT = """
window.addEventListener("load", function () {
  var broken = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!(img.complete && img.naturalWidth > 0)) { broken += 1; }
  }
  document.body.dataset.brokenImages = String(broken);
  if (broken > 0) {
    var warning = document.getElementById("broken-images-warning");
    warning.textContent = broken + " figure(s) failed to load: this report is incomplete.";
    warning.hidden = false;
  }
});
"""


def paragraph(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{attribute}>{escape(text)}</p>"


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{escape(text)}</h{level}>"


def bullet_list(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table; no header row when `header` is empty."""
    head = "<thead><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def details(summary: str, body: str, open_: bool = False) -> str:
    """`body` (HTML) folded behind a one-line `summary`: the page reads top-down with the details closed."""
    return f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>{body}</details>"


def links(targets: Sequence[tuple[str, str]]) -> str:
    """One line of links to sections of the page: (anchor, text) each."""
    return "<p>" + " · ".join(f'<a href="#{escape(anchor)}">{escape(text)}</a>' for anchor, text in targets) + "</p>"


def figure(data_uri: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{data_uri}" alt="{escape(alt)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def page(title: str, sections: Sequence[tuple[str, str, str]], preface: str = "") -> str:
    """The whole document from (anchor, heading, body HTML) sections, with a link to each; `preface` (HTML) stands
    between the links and the first section."""
    links = "".join(f'<a href="#{anchor}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    blocks = "\n".join(f'<section id="{anchor}"><h2>{escape(heading)}</h2>{body}</section>'
                       for anchor, heading, body in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        '<p id="broken-images-warning" class="warning" hidden></p>\n'
        f"<h1>{escape(title)}</h1><nav>{links}</nav>\n{preface}{blocks}\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
