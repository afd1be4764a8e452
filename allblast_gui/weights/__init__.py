"""Model ▸ ImageNet Weights…: where each backbone's ImageNet weights come from, and the ways to get them."""
