"""The native launcher at the head of every executable (launcher.c, C99 + POSIX): a package only so that
its C source ships in the wheel as package data; bundler/launcher_build.py compiles it."""
