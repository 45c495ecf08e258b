"""Small text statistics helpers."""

from .core import (
    average_word_length,
    line_count,
    most_common_words,
    reading_time_minutes,
    word_count,
)

__all__ = [
    "average_word_length",
    "line_count",
    "most_common_words",
    "reading_time_minutes",
    "word_count",
]
