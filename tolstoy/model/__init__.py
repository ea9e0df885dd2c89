"""GPT-2 from scratch or from a base, its loss, and its export."""
