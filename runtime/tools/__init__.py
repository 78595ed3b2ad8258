"""Tool calling: which tool-call syntax a chat template's model speaks (families.py), the grammars that
make its calls valid (grammars.py), the conversation and tools as its template wants them (prompt.py),
and its calls read back from its output (parse.py)."""
