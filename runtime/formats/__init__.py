"""Chat formats: how a conversation becomes the prompt a model was trained on."""
