"""Posts and comments."""
