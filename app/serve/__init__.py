"""`omnidesk serve`: the model behind OpenAI-compatible chat completions, for other computers."""
