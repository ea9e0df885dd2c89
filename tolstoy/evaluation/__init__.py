"""How good a model is: its loss and bits per character on held-out blocks, and its samples."""
