"""Controllers: Qt objects without widgets that connect views, models and the engine."""
