"""The frozen runtime's entry script (PyInstaller needs a script, not a package's __main__)."""

from llmpack.runtime.__main__ import run

run()
