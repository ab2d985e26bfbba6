"""Generated answers from an OpenAI-compatible dialogue model, grounded in retrieved knowledge."""
