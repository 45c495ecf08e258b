import unittest

from textstats import (
    average_word_length,
    line_count,
    most_common_words,
    reading_time_minutes,
    word_count,
)

SAMPLE = "The quick brown fox\n\njumps over the lazy dog.\nThe end"


class CoreTest(unittest.TestCase):
    def test_word_count(self):
        self.assertEqual(word_count(SAMPLE), 11)
        self.assertEqual(word_count(""), 0)

    def test_line_count_skips_blank_lines(self):
        self.assertEqual(line_count(SAMPLE), 3)

    def test_average_word_length(self):
        self.assertAlmostEqual(average_word_length("ab abcd"), 3.0)
        self.assertEqual(average_word_length("  "), 0.0)

    def test_most_common_words(self):
        self.assertEqual(most_common_words(SAMPLE, 1), [("the", 3)])

    def test_reading_time(self):
        self.assertAlmostEqual(reading_time_minutes("a b c d", 2), 2.0)
        with self.assertRaises(ValueError):
            reading_time_minutes("a", 0)


if __name__ == "__main__":
    unittest.main()
