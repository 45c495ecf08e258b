import re
from collections import Counter

_WORD = re.compile(r"[A-Za-z0-9']+")


def _words(text):
    return _WORD.findall(text)


def word_count(text):
    """Return the number of words in `text`."""
    return len(_words(text))


def line_count(text):
    """Return the number of non-empty lines in `text`."""
    return sum(1 for line in text.splitlines() if line.strip())


def average_word_length(text):
    words = _words(text)
    if not words:
        return 0.0
    return sum(len(w) for w in words) / len(words)


def most_common_words(text, n=3):
    counts = Counter(w.lower() for w in _words(text))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def reading_time_minutes(text, words_per_minute=200):
    if words_per_minute <= 0:
        raise ValueError("words_per_minute must be positive")
    return word_count(text) / words_per_minute
