"""nemotron-elastic: many-in-one elastic LLMs."""
