"""Package discovery, which pyproject.toml alone cannot express here: the repository's top-level
folders bundler/, runtime/ and templates/ install as `llmpack.bundler`, `llmpack.runtime` and
`llmpack.templates` (with `llmpack` a namespace), and every sub-package under them must come along,
found rather than listed, so that a new one (runtime/chat/ was once forgotten) cannot be left out of
a wheel. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

TOP_LEVEL = ("bundler", "runtime", "templates")

setup(
    packages=[f"llmpack.{top}{'.' + sub if sub else ''}"
              for top in TOP_LEVEL for sub in ["", *find_packages(top)]],
    package_dir={f"llmpack.{top}": top for top in TOP_LEVEL},
)
