// Math, as llama-server's page shows it: KaTeX (inlined from npm) for $...$ and \(...\) inline, $$...$$ and
// \[...\] on their own. markdown-it finds the math before its own escapes would eat LaTeX's backslashes,
// and leaves an empty element holding the TeX; KaTeX fills it after DOMPurify (renderMath), through the
// DOM, not an HTML string: its inline styles would be refused by the page's Content-Security-Policy.

function mathElement(tex, display) {
  const tag = display ? "div" : "span";
  return `<${tag} class="math${display ? " display" : ""}" data-tex="${md.utils.escapeHtml(tex)}"></${tag}>`;
}

// Inline: `$` must hug its TeX on both sides and not be followed by a digit ("$5 and $10" is money).
function mathInline(state, silent) {
  const src = state.src, start = state.pos;
  let open, close, display;
  if (src.startsWith("$$", start)) { open = "$$"; close = "$$"; display = true; }
  else if (src[start] === "$") { open = "$"; close = "$"; display = false; }
  else if (src.startsWith("\\(", start)) { open = "\\("; close = "\\)"; display = false; }
  else if (src.startsWith("\\[", start)) { open = "\\["; close = "\\]"; display = true; }
  else return false;
  const from = start + open.length;
  let end = src.indexOf(close, from);
  while (open === "$" && end > 0 && src[end - 1] === "\\") end = src.indexOf(close, end + 1);
  if (end < 0 || end === from || end > state.posMax) return false;
  const tex = src.slice(from, end);
  if (open === "$" && (/^\s|\s$/.test(tex) || /\d/.test(src[end + 1] || ""))) return false;
  if (!silent) {
    const token = state.push("math", "", 0);
    token.content = tex; token.meta = {display};
  }
  state.pos = end + close.length;
  return true;
}

// A block: a line that starts with $$ or \[, up to the line that ends with $$ or \].
function mathBlock(state, startLine, endLine, silent) {
  const lineText = line => state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line]);
  const first = lineText(startLine);
  const open = first.startsWith("$$") ? "$$" : first.startsWith("\\[") ? "\\[" : null;
  if (!open || state.sCount[startLine] - state.blkIndent >= 4) return false;
  const close = open === "$$" ? "$$" : "\\]";
  let rest = first.slice(2), line = startLine, parts = [];
  for (;;) {
    const at = rest.trimEnd().endsWith(close) ? rest.trimEnd().length - 2 : -1;
    if (at >= 0 && (line > startLine || rest.trim().length > 2 || rest.trim() === close)) {
      parts.push(rest.trimEnd().slice(0, at));
      if (line === startLine && !parts[0].trim()) return false;  // "$$" alone opens a block, never closes one
      break;
    }
    parts.push(rest);
    if (++line >= endLine) return false;
    rest = lineText(line);
  }
  if (silent) return true;
  const token = state.push("math", "", 0);
  token.block = true; token.content = parts.join("\n").trim(); token.meta = {display: true};
  token.map = [startLine, line + 1];
  state.line = line + 1;
  return true;
}

md.inline.ruler.before("escape", "math", mathInline);
md.block.ruler.before("fence", "math", mathBlock, {alt: ["paragraph", "reference", "blockquote", "list"]});
md.renderer.rules.math = (tokens, i) => mathElement(tokens[i].content, tokens[i].meta.display) + (tokens[i].block ? "\n" : "");

function renderMath(element) {
  for (const box of element.querySelectorAll(".math[data-tex]")) {
    try {
      katex.render(box.dataset.tex, box, {displayMode: box.classList.contains("display"), throwOnError: false,
                                          output: "htmlAndMathml"});
    } catch (e) {
      box.textContent = box.dataset.tex;  // KaTeX's own limits (a macro expanding without end)
    }
  }
}
