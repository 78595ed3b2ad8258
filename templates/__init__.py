"""Data files shared by the build side and the runtime: the PyInstaller spec, the help page, the web chat."""
