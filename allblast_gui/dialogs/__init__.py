"""Dialogs of the review window."""
