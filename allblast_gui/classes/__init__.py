"""Class sets: Label ▸ Classes… (`dialog`) and what follows an edit (`feature`)."""
