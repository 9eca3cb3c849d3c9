"""Headless Chromium for the dashboard tests: render a file offline, dump its DOM, screenshot.

Without Chromium the tests skip with a message, unless ``BUDGETWARDEN_REQUIRE_SERVICES=1``
(CI), where they fail.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from services import binary_or_skip

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--enable-logging=stderr",
    "--v=0",
)
#: Put before the page's own scripts: records errors and alert() calls in the DOM.
PROBE = (
    "<script>(function(){var d=document.documentElement;"
    "function note(k,v){d.setAttribute(k,(d.getAttribute(k)||'')+'|'+v);}"
    "window.addEventListener('error',function(e){note('data-errors',e.message);},true);"
    "window.alert=function(m){note('data-alerted',String(m));};})();</script>"
)


def chromium() -> str:
    """The Chromium binary, or skip (fail under BUDGETWARDEN_REQUIRE_SERVICES=1)."""
    return binary_or_skip(*_NAMES, install="chromium")


def with_probe(page: str) -> str:
    """The page with ``PROBE`` right after ``<head>``."""
    return page.replace("<head>", "<head>" + PROBE, 1)


@dataclass
class Rendered:
    """What Chromium made of a page: the DOM after scripts ran, and its console log."""

    dom: str
    log: str


def render(binary: str, page: Path, profile: Path, *, screenshot: Path | None = None) -> Rendered:
    """Load ``page`` in headless Chromium; dump the DOM (or take a screenshot)."""
    action = (
        [f"--screenshot={screenshot}", "--window-size=1300,1500"] if screenshot else ["--dump-dom"]
    )
    done = subprocess.run(
        [binary, *_FLAGS, f"--user-data-dir={profile}", *action, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return Rendered(done.stdout, done.stderr)


@dataclass
class Node:
    """An element of the dumped DOM."""

    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        """Descendants with this tag (and this class among theirs)."""
        found = []
        for child in self.children:
            classes = child.attrs.get("class", "").split()
            if child.tag == tag and (cls is None or cls in classes):
                found.append(child)
            found.extend(child.find_all(tag, cls))
        return found

    def by_id(self, ident: str) -> Node:
        """The descendant with this id."""
        for child in self.children:
            if child.attrs.get("id") == ident:
                return child
            try:
                return child.by_id(ident)
            except KeyError:
                continue
        raise KeyError(ident)

    def all_text(self) -> str:
        """The text of this node and its descendants."""
        return self.text + "".join(c.all_text() for c in self.children)


_VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr", "area", "base"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.node = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(node)
        if tag not in _VOID:
            self.node = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.node.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.node))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.text += data


def parse(dom: str) -> Node:
    """The dumped DOM as a tree of ``Node``."""
    builder = _Builder()
    builder.feed(dom)
    return builder.root
