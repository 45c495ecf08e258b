"""Invoice arithmetic (with two bugs the test-and-fix example repairs)."""

from .totals import apply_discount, subtotal, total

__all__ = ["apply_discount", "subtotal", "total"]
