"""``make bench``: the side-by-side benchmark report (markdown tables, machine description)."""
