"""Products and stock."""
