"""The frozen runtime's entry script (PyInstaller needs a script, not a package's __main__)."""

import sys

from llmpack.runtime.__main__ import main

sys.exit(main())
