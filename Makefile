.PHONY: setup demo test bench clean

setup:
	bash build/setup.sh

demo: setup
	bash build/demo.sh

test: setup
	bash build/system-deps.sh
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python bench/run.py

clean:
	rm -rf dist .pytest_cache .cache
