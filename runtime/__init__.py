"""What runs inside an llmpack executable: flags, the engine, and the CLI, chat and server modes."""

__version__ = "0.1.0"
