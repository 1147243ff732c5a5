"""The teacher engine: prompts, validation, response cache, OpenAI-compatible client, offline teacher."""
