"""``beam_pipeline.show_text``: word diffs and snippets cut around the first change."""

from __future__ import annotations

from beam_pipeline.show_text import Style, marked_snippet, snippet, word_diff

ANSI = "\x1b["


# --------------------------------------------------------------------------- words and snippets


def test_word_diff_marks_changed_words_and_ignores_case_and_punctuation() -> None:
    kept = "The quick brown fox jumps over the lazy dog."
    assert word_diff(kept, "THE QUICK, brown fox; jumps over the lazy dog").changed == 0
    diff = word_diff(kept, "The quick red fox jumps over the lazy dog today.")
    assert diff.changed == 2
    plain = marked_snippet("The quick red fox jumps over the lazy dog today.", diff, 200,
                           Style(colour=False))
    assert plain == "The quick [-brown-]{+red+} fox jumps over the lazy dog {+today+}."
    coloured = marked_snippet("The quick red fox jumps over the lazy dog today.", diff, 200,
                              Style(colour=True))
    assert ANSI in coloured and "{+" not in coloured


def test_snippet_is_cut_at_words_around_the_first_change() -> None:
    words = [f"w{i}" for i in range(200)]
    kept = " ".join(words)
    removed = " ".join([*words[:150], "NEW", *words[150:]])
    shown = marked_snippet(removed, word_diff(kept, removed), 80, Style(colour=False))
    assert shown.startswith("…w1") and shown.endswith("…") and "{+NEW+}" in shown
    assert len(shown) < 120
    assert snippet("a  b\n\nc", 100) == "a b c"
