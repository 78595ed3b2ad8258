"""What the executable says about itself without running a model: `--help` and `--version`."""
