"""Check a built site (``make docs``): every public name has an API entry, and no page loads from the network.

``python docs/check_site.py [docs/_build/html]`` exits with status 1 and says what is wrong. The entries are read
from the site's object inventory (``objects.inv``, the list of everything the pages document); a page loads from
the network if a script, stylesheet, image or font of it has an ``http(s)://`` or ``//`` address.
"""

from __future__ import annotations

import importlib
import re
import sys
import zlib
from pathlib import Path

PACKAGES = ("otkit", "otseg")
_RESOURCE = re.compile(r"<(?:script|img|link|source|iframe)\b[^>]*?\b(?:src|href)=[\"']((?:https?:)?//[^\"']+)", re.I)


def inventory(html: Path) -> dict[str, str]:
    """``{name: page}`` of the objects the site documents, from its ``objects.inv``."""
    data = (html / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then the zlib-compressed entries
        header_end = data.index(b"\n", header_end) + 1
    entries: dict[str, str] = {}
    for line in zlib.decompress(data[header_end:]).decode().splitlines():
        match = re.match(r"(.+?)\s+(\S+):(\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line)
        if match and match.group(2) == "py":
            entries[match.group(1)] = match.group(5)
    return entries


def missing_entries(html: Path) -> list[str]:
    """The names of ``otkit.__all__`` and ``otseg.__all__`` that have no entry in the built site."""
    entries = inventory(html)
    names = [f"{p}.{name}" for p in PACKAGES for name in importlib.import_module(p).__all__]
    return [name for name in names if name not in entries]


def network_resources(html: Path) -> list[str]:
    """``page: address`` of every resource a page would fetch from the network."""
    found = []
    for page in sorted(html.rglob("*.html")):
        for address in _RESOURCE.findall(page.read_text(errors="replace")):
            found.append(f"{page.relative_to(html)}: {address}")
    return found


def problems(html: Path) -> list[str]:
    """Everything wrong with the site in ``html``, one line each (empty: all is well)."""
    if not (html / "index.html").is_file() or not (html / "objects.inv").is_file():
        return [f"{html} holds no built site (index.html, objects.inv): run make docs"]
    found = [f"no API entry for {name} (rebuild with make docs)" for name in missing_entries(html)]
    found += [f"loads from the network: {line}" for line in network_resources(html)]
    if not (html / "_static" / "mathjax" / "tex-chtml.js").is_file():
        found.append("MathJax is not served with the site (_static/mathjax/tex-chtml.js is missing)")
    return found


def main(argv: list[str]) -> int:
    """Check the site in ``argv[0]`` (default ``docs/_build/html`` beside this file); print the problems."""
    html = Path(argv[0]) if argv else Path(__file__).resolve().parent / "_build" / "html"
    found = problems(html)
    for line in found:
        print(f"docs/check_site.py: {line}", file=sys.stderr)
    if not found:
        print(f"docs/check_site.py: {html} documents every public name and loads nothing from the network")
    return 1 if found else 0


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, where the page folders otkit/ and otseg/ would shadow
    # the installed packages (as namespace packages without __all__).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
    sys.exit(main(sys.argv[1:]))
