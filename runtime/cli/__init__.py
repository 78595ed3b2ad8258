"""`--cli`: the one-shot mode for shell scripts."""
