// Fitting a conversation into the model's context, as the terminal chat does (runtime/chat/session.py's
// make_room): before a reply, the oldest exchanges stop being sent until the prompt and some room for the
// reply fit; the system prompt always goes. They stay on screen, marked, since the page must not lose
// what was said. A message that cannot fit even alone is not sent, and the user is told so in their
// words (the server's own message names -c and -np, which are the operator's). nCtx is what one
// conversation may hold: /v1/models' meta.n_ctx is the server's per-sequence context.
const REPLY_ROOM = 512;  // tokens kept free for the reply, at most a quarter of the context
const CUT_LABELS = {context: "cut: context full", tokens: "cut: token limit"};
const promptCounts = new WeakMap();  // chat -> its last prompt's length in tokens (a stopped reply's stats)

function replyRoom() {
  const wanted = Number(settings.max_tokens) > 0 ? Number(settings.max_tokens) : REPLY_ROOM;
  return Math.max(1, Math.min(wanted, Math.floor(nCtx / 4)));
}

// What the model is sent: not the dropped messages, nor the empty reply about to be written.
function sentMessages(c) {
  return c.messages.filter(m => !m.dropped && !(m.pending && !m.content));
}

// The prompt's length in tokens, as the server renders (/apply-template) and tokenizes it; null when the
// server cannot say (then the request goes as it is, and a refusal still drops the oldest turn).
async function promptTokens(c, raw, signal) {
  if (!raw && hasMedia(c)) {  // images and sounds count as the projector makes them: the server counts (attach.js)
    const counted = await api("/v1/chat/completions/input_tokens", {method: "POST", signal,
                                                                    body: JSON.stringify({messages: conversationFor(c)})});
    return counted.ok ? (await counted.json()).input_tokens : null;
  }
  let text = promptOf(c);
  if (!raw) {
    const rendered = await api("/apply-template", {method: "POST", signal,
                                                   body: JSON.stringify({messages: conversationFor(c)})});
    if (!rendered.ok) return null;
    text = (await rendered.json()).prompt;
  }
  // As the server tokenizes a prompt: the BOS counts (a template that writes its own gets it counted once
  // more: one token of margin), control tokens are parsed.
  const response = await api("/tokenize", {method: "POST", signal,
                                           body: JSON.stringify({content: text, add_special: true, parse_special: true})});
  return response.ok ? (await response.json()).tokens.length : null;
}

// Marks the oldest exchange still sent (a user turn and the replies after it) as dropped, never the last
// user message (the one about to be answered): runtime/chat/conversation.py's forget_oldest_exchange.
function dropOldest(c) {
  const kept = sentMessages(c);
  const lastUser = kept.map(m => m.role).lastIndexOf("user");
  const firstReply = kept.findIndex(m => m.role === "assistant");
  if (firstReply < 0 || firstReply > lastUser) return [];
  let end = firstReply;
  while (end < kept.length && kept[end].role === "assistant") end++;
  const gone = kept.slice(0, end);
  for (const m of gone) m.dropped = true;
  return gone;
}

// Drops the oldest exchanges until the prompt and the reply's room fit; returns how many messages went.
// Throws a "too-long" error (and drops nothing) when even the newest message does not fit.
async function makeRoom(c, raw, continuing, signal) {
  await loadMedia(sentMessages(c).flatMap(m => m.media || []));  // attach.js: a reloaded chat's files, to send
  if (!nCtx) return 0;  // the model's context is not known yet: the server will judge
  const gone = [];
  let tokens = await promptTokens(c, raw, signal);
  while (tokens !== null && tokens + replyRoom() > nCtx) {
    const more = dropOldest(c);
    if (!more.length) break;
    gone.push(...more);
    tokens = await promptTokens(c, raw, signal);
  }
  if (tokens !== null) promptCounts.set(c, tokens);
  if (tokens !== null && tokens >= nCtx) {
    for (const m of gone) delete m.dropped;  // nothing will be sent: the conversation stays as it was
    throw tooLong(tokens, continuing);
  }
  return gone.length;
}

// `tokens`: the prompt's length, when the page counted it (null: the server refused it for length).
function tooLong(tokens, continuing) {
  const context = "the model's context" + (nCtx ? ` of ${nCtx} tokens` : "");
  const message = continuing
    ? `This reply cannot go on: your message and the reply so far fill ${context}. ` +
      "Edit your message to make it shorter, or start a new chat."
    : "This message is too long for the model: " +
      (tokens ? `it is about ${tokens} tokens with the system prompt, and the model's context holds ${nCtx} tokens. `
              : `with the system prompt it does not fit in ${context}. `) +
      "Shorten it.";
  return Object.assign(new Error(message), {kind: "too-long"});
}

// A reply that ended with finish_reason "length" was cut: by the context when it filled it (the last token
// sampled never entered the context, so prompt + completion can pass n_ctx by one), else by max_tokens.
function cutOf(finish, usage) {
  if (finish !== "length") return null;
  return usage && nCtx && usage.prompt_tokens + usage.completion_tokens >= nCtx ? "context" : "tokens";
}

// Shown after the last dropped message.
function droppedNote(count) {
  const note = document.createElement("div");
  note.className = "dropped-note";
  note.setAttribute("role", "note");
  note.textContent = `context full: the ${count === 1 ? "oldest message is" : count + " oldest messages are"} ` +
                     "no longer sent to the model, to make room (the system prompt is kept)";
  return note;
}

function showContext(usage) {
  // Capped: a reply cut by the context reports one token more than the context holds (see cutOf).
  const used = usage ? Math.min(usage.prompt_tokens + usage.completion_tokens, nCtx || Infinity) : 0;
  // The word goes at phone width (CSS), where the header has one line for everything.
  $("context").replaceChildren(...(nCtx ? [label("context-word", "context "), `${used} / ${nCtx}`] : []));
}
