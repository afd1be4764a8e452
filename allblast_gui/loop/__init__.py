"""The expert loop: next cells to label, look-alikes, Keep Learning (issue 24)."""
