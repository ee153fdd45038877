"""Notifications to one user."""
