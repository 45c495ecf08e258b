import unittest

from invoice import apply_discount, subtotal, total


class SubtotalTest(unittest.TestCase):
    def test_empty_invoice_is_zero(self):
        self.assertEqual(subtotal([]), 0)

    def test_sums_every_line(self):
        self.assertEqual(subtotal([(2, 5.0), (1, 3.5), (4, 0.25)]), 14.5)


class DiscountTest(unittest.TestCase):
    def test_no_discount(self):
        self.assertEqual(apply_discount(80.0, 0), 80.0)

    def test_ten_percent(self):
        self.assertEqual(apply_discount(80.0, 10), 72.0)

    def test_rejects_more_than_everything(self):
        with self.assertRaises(ValueError):
            apply_discount(10.0, 150)


class TotalTest(unittest.TestCase):
    def test_total_with_discount_and_tax(self):
        self.assertEqual(total([(1, 100.0)], discount_percent=10, tax_rate=0.2), 108.0)


if __name__ == "__main__":
    unittest.main()
