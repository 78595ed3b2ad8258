"""The terminal chatbot: a conversation (`conversation`), bound to the engine (`session`), slash
commands (`commands`), streamed and highlighted output (`render`), and the prompt_toolkit loop (`repl`).
Only `repl` needs a terminal; the rest is tested without one, and without a model where possible."""
