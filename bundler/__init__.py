"""The build side of llmpack: turns GGUF weights and a frozen runtime into one executable."""

__version__ = "0.1.0"
