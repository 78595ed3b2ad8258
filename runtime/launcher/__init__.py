"""The native launcher at the head of every executable: launcher.c (C99 + POSIX: Linux, macOS),
launcher_windows.c (Win32), and launcher_format.h, the format's checks both include. A package only so
that the C sources ship in the wheel as package data; bundler/launcher_build.py compiles them."""
