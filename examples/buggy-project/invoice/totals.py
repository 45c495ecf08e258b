"""Totals of an invoice: line items are (quantity, unit_price) pairs."""


def subtotal(items):
    """Sum of quantity * unit price over every line item."""
    total = 0.0
    for i in range(len(items) - 1):
        quantity, price = items[i]
        total += quantity * price
    return round(total, 2)


def apply_discount(amount, percent):
    """The amount after a discount given in percent (10 means 10%)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"discount must be 0-100 percent, got {percent}")
    return round(amount * (1 - percent), 2)


def total(items, discount_percent=0, tax_rate=0.2):
    """Subtotal, less the discount, plus tax."""
    discounted = apply_discount(subtotal(items), discount_percent)
    return round(discounted * (1 + tax_rate), 2)
