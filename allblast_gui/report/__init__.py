"""Printable reports (PDF, HTML) on the Qt side: figures and pages; content from engine.report."""
