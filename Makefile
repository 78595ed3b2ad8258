.PHONY: setup system-deps demo test bench clean

setup:
	bash build/setup.sh

demo: setup
	bash build/demo.sh

# System packages first: the set-up builds the web page with npm, which they bring on a fresh machine.
test: system-deps setup
	.venv/bin/python -m pytest

system-deps:
	bash build/system-deps.sh

bench: setup
	.venv/bin/python bench/run.py

clean:
	rm -rf dist .pytest_cache .cache
