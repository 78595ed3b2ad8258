"""Builds the web chat page, templates/server_chat.html, from web/page.html, page.css, the page's own scripts and the
minified files of the npm packages pinned in web/package-lock.json (installed by `npm ci` in web/, once
per lock: build/setup.sh runs `--install`, and any build or check does it if needed). Everything is
inlined: the page is one file that the executable serves and that works offline. The
Content-Security-Policy's script and style hashes are computed here, put in the page's <meta> tag, and
sent as a header by the server (runtime/server/routes_misc.py reads them back).

The built page is committed, so that a wheel, an editable checkout and the frozen runtime all serve it
without node; tests/test_server_web.py checks that it matches what this script builds.

    python web/build_page.py            # writes templates/server_chat.html (and server_sw.js)
    python web/build_page.py --check    # exits 1 if the committed page is out of date
    python web/build_page.py --install  # only `npm ci`, once per lock
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
PAGE = WEB.parent / "templates" / "server_chat.html"
# The page's service worker (runtime/server/routes_web.py serves it at /sw.js): a file of its own, since a
# worker is loaded by URL; copied as it is.
WORKER, WORKER_OUT = WEB / "sw.js", WEB.parent / "templates" / "server_sw.js"
# Classic (non-module) browser builds, each defining one global: markdownit, DOMPurify, hljs (highlight.js's
# "common" build: 36 of its 190 languages), katex.
SCRIPTS = ("markdown-it/dist/markdown-it.min.js", "dompurify/dist/purify.min.js",
           "@highlightjs/cdn-assets/highlight.min.js", "katex/dist/katex.min.js")
# The page's own files, in order: store.js first (chat.js loads the conversations with it), start.js last
# (it starts the page once every other file has declared its names).
OWN_SCRIPTS = ("store.js", "chat.js", "math.js", "list.js", "branches.js", "connect.js", "fit.js", "stream.js", "files.js",
               "attach.js", "panel.js", "keys.js", "mcp.js", "tools.js", "start.js")
LIGHT = "@highlightjs/cdn-assets/styles/github.min.css"
DARK = "@highlightjs/cdn-assets/styles/github-dark.min.css"
KATEX_CSS = "katex/dist/katex.min.css"
# KaTeX's fonts, each offered as woff2, woff and ttf: every browser that runs the page reads woff2, so only
# those are inlined (260 KB), as data: URLs.
_FONT_SRC = re.compile(r'src:url\((fonts/[\w-]+)\.woff2\) format\("woff2"\)(,url\([^)]*\) format\("[a-z]+"\))*')


def ensure_packages() -> Path:
    """web/node_modules as web/package-lock.json pins it: `npm ci` once per lock (npm's own cache makes a
    repeat cheap). Here rather than only in build/setup.sh, which a fresh machine runs before
    build/system-deps.sh has installed npm."""
    modules, lock = WEB / "node_modules", WEB / "package-lock.json"
    stamp = modules / ".llmpack-lock"
    if stamp.is_file() and stamp.read_bytes() == lock.read_bytes():
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("build_page: npm is needed to install web/package-lock.json's packages "
                         "(build/system-deps.sh installs it)")
    print("build_page: npm ci (web/package-lock.json)", file=sys.stderr)
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB, check=False,
                            stdout=sys.stderr)
    if result.returncode != 0:
        raise SystemExit("build_page: npm ci failed in web/")
    stamp.write_bytes(lock.read_bytes())
    return modules


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _inline_script(text: str) -> str:
    if "</script" in text.lower():
        raise SystemExit("build_page: a script holds '</script', which would end the inline <script> early")
    return text.strip()


def _katex_css(modules: Path) -> str:
    css = (modules / KATEX_CSS).read_text()

    def inline(match: re.Match) -> str:
        font = (modules / "katex/dist" / (match.group(1) + ".woff2")).read_bytes()
        return f'src:url(data:font/woff2;base64,{base64.b64encode(font).decode()}) format("woff2")'

    css, count = _FONT_SRC.subn(inline, css)
    if count == 0 or "url(fonts/" in css:
        raise SystemExit(f"build_page: {KATEX_CSS}'s fonts are not where this script expects them")
    return css.strip()


def build() -> str:
    modules = ensure_packages()
    missing = [name for name in (*SCRIPTS, LIGHT, DARK, KATEX_CSS) if not (modules / name).is_file()]
    if missing:
        raise SystemExit(f"build_page: {modules / missing[0]} is missing: run `npm ci` in {WEB}")
    style = "\n".join([(WEB / "page.css").read_text().strip(), _katex_css(modules), (modules / LIGHT).read_text().strip(),
                       "@media (prefers-color-scheme: dark) {" + (modules / DARK).read_text().strip() + "}"])
    scripts = [_inline_script((modules / name).read_text()) for name in SCRIPTS]
    # The page's own script, one file per job, run as one (they share its top-level names).
    scripts.append(_inline_script("\n".join((WEB / name).read_text() for name in OWN_SCRIPTS)))
    csp = "; ".join([
        "default-src 'self'", "script-src " + " ".join(_sha256(s) for s in scripts),
        "style-src " + _sha256(style), "img-src 'self' data:", "media-src data:", "font-src data:",
        "connect-src 'self' http: https:",
        "worker-src 'self'", "manifest-src 'self'", "object-src 'none'",
        "base-uri 'none'", "form-action 'self'"])
    page = (WEB / "page.html").read_text()
    for marker in ("@CSP@", "<!-- @STYLE@ -->", "<!-- @SCRIPTS@ -->"):
        if page.count(marker) != 1:
            raise SystemExit(f"build_page: web/page.html must hold {marker} once")
    page = page.replace("@CSP@", csp)
    page = page.replace("<!-- @STYLE@ -->", f"<style>{style}</style>")
    return page.replace("<!-- @SCRIPTS@ -->", "\n".join(f"<script>{s}</script>" for s in scripts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Builds templates/server_chat.html from web/.")
    parser.add_argument("--check", action="store_true", help="only check that the committed page is up to date")
    parser.add_argument("--install", action="store_true", help="only install the npm packages (npm ci), once per lock")
    parser.add_argument("--output", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    if args.install:
        ensure_packages()
        return 0
    page, worker = build(), WORKER.read_text()
    if args.check:
        for path, text in ((args.output, page), (WORKER_OUT, worker)):
            if not path.is_file() or path.read_text() != text:
                print(f"build_page: {path} is out of date: run `python web/build_page.py`", file=sys.stderr)
                return 1
        return 0
    args.output.write_text(page)
    WORKER_OUT.write_text(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
