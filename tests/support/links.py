"""The links of an HTML page (every src and href), read with the standard library's parser."""

from __future__ import annotations

from html.parser import HTMLParser


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def links_of(page: str) -> list[str]:
    """Every src and href of `page`, in order ("" for an empty one)."""
    parser = Links()
    parser.feed(page)
    return parser.urls
