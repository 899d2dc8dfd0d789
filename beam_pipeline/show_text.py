r"""Text for ``ndcl show``: snippets of documents, the words a removed document changed
against its kept one, and how they are marked (ANSI colour on a terminal, plain
``[-kept only-]``/``{+removed only+}`` markers otherwise).

Words are compared as NDCL compares them: lower case, runs of Unicode letters and digits
(``[^\W_]+``), so an exact duplicate (the same words in another case, punctuation or spacing)
shows no change; the text shown is the document's own, whitespace collapsed.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from difflib import SequenceMatcher

WORD = re.compile(r"[^\W_]+")
SPACE = re.compile(r"\s+")
MAX_DIFF_WORDS = 20_000  # longer texts are shown without word changes (difflib is quadratic)
DELETED_SHOWN = 80  # characters of a run of kept-only words shown inside [-...-]
ANSI = {"added": "\x1b[1;32m", "deleted": "\x1b[9;31m", "id": "\x1b[1m", "head": "\x1b[1;36m",
        "dim": "\x1b[2m", "reset": "\x1b[0m"}
MARKERS = {"added": ("{+", "+}"), "deleted": ("[-", "-]")}


@dataclass(frozen=True)
class Style:
    """How marked text is written: ANSI colour, or plain markers."""

    colour: bool

    def mark(self, kind: str, text: str) -> str:
        if self.colour:
            return f"{ANSI[kind]}{text}{ANSI['reset']}"
        start, end = MARKERS.get(kind, ("", ""))
        return f"{start}{text}{end}"


def _words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in WORD.finditer(text)]


def _collapse(text: str) -> str:
    return SPACE.sub(" ", text)


def _window(text: str, anchor: int, width: int) -> tuple[int, int]:
    """A span of about ``width`` characters of ``text`` around ``anchor`` (a quarter of it
    before), cut at whitespace."""
    start = max(0, anchor - width // 4)
    if start:
        space = SPACE.search(text[::-1], len(text) - start)
        start = len(text) - space.start() if space else 0
    end = min(len(text), start + width)
    if end < len(text):
        space = SPACE.search(text, end)
        end = space.start() if space else len(text)
    return start, end


def snippet(text: str, width: int, anchor: int = 0) -> str:
    """``text`` around ``anchor``, whitespace collapsed, ``…`` where it was cut."""
    start, end = _window(text, anchor, width)
    return ("…" if start else "") + _collapse(text[start:end]).strip() + (
        "…" if end < len(text) else "")


@dataclass(frozen=True)
class WordDiff:
    """How a removed text differs from its kept text, word by word: ``added`` spans of the
    removed text, ``deleted`` runs of kept words (at their position in the removed text), and
    ``changed`` words in all."""

    added: tuple[tuple[int, int], ...]
    deleted: tuple[tuple[int, str], ...]
    changed: int
    anchor: int  # where in the removed text the first change is


def word_diff(kept: str, removed: str) -> WordDiff | None:
    """The word changes from ``kept`` to ``removed`` (None for texts too long to compare)."""
    old, new = _words(kept), _words(removed)
    if len(old) > MAX_DIFF_WORDS or len(new) > MAX_DIFF_WORDS:
        return None
    matcher = SequenceMatcher(None, [w for w, _, _ in old], [w for w, _, _ in new],
                              autojunk=False)
    added, deleted, changed = [], [], 0
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        changed += max(i2 - i1, j2 - j1)
        at = new[j1][1] if j1 < len(new) else len(removed)
        if i2 > i1:
            deleted.append((at, kept[old[i1][1]:old[i2 - 1][2]]))
        if j2 > j1:
            added.append((new[j1][1], new[j2 - 1][2]))
    anchors = [a for a, _ in added] + [a for a, _ in deleted]
    return WordDiff(tuple(added), tuple(deleted), changed, min(anchors, default=0))


def marked_snippet(removed: str, diff: WordDiff | None, width: int, style: Style) -> str:
    """A snippet of ``removed`` around its first change, changes marked with ``style``."""
    if diff is None or not diff.changed:
        return snippet(removed, width)
    start, end = _window(removed, diff.anchor, width)
    pieces = ["…"] if start else []
    cursor = start
    events = sorted([(a, 0, e) for a, e in diff.added if e > start and a < end] +
                    [(a, -1, t) for a, t in diff.deleted if start <= a <= end],
                    key=lambda event: (event[0], event[1]))
    for at, kind, value in events:
        at = max(at, cursor)
        pieces.append(_collapse(removed[cursor:at]))
        if kind < 0:
            shown = _collapse(value).strip()
            shown = shown if len(shown) <= DELETED_SHOWN else shown[:DELETED_SHOWN] + "…"
            pieces.append(style.mark("deleted", shown))
            cursor = at
        else:
            stop = min(value, end)
            pieces.append(style.mark("added", _collapse(removed[at:stop])))
            cursor = stop
    pieces.append(_collapse(removed[cursor:end]))
    return "".join(pieces).strip() + ("…" if end < len(removed) else "")


def wrap(text: str, indent: int, width: int) -> str:
    return textwrap.fill(text, width=max(40, width), initial_indent=" " * indent,
                         subsequent_indent=" " * indent, break_long_words=False,
                         break_on_hyphens=False)
