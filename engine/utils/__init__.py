"""Plain helpers every other engine package may use; they import nothing else from the engine."""
