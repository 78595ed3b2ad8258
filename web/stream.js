// Talking to the server: the request for a reply, and the reply streamed into its own conversation.
// Each conversation has at most one reply running (`running`, by chat id); switching to another chat
// leaves it going in the background, saved as it streams and drawn whenever its chat is on screen.
function apiKey() { return sessionStorage.getItem(KEY) || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({"Content-Type": "application/json"}, options.headers || {});
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (response.status === 401) throw Object.assign(new Error("this server needs its API key"), {kind: "auth"});
  return response;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return Object.assign(new Error(body.error.message), {code: body.error.code, status: response.status});
  } catch (e) {
    return Object.assign(new Error(`${response.status} ${response.statusText}`), {status: response.status});
  }
}

function requestBody(fields) {
  const body = Object.assign(fields, {stream: true, stream_options: {include_usage: true}});
  if (modelName) body.model = modelName;
  for (const name of NUMBERS) {
    if (settings[name] !== undefined && settings[name] !== "") body[name] = Number(settings[name]);
  }
  if (Array.isArray(settings.stop) && settings.stop.length) body.stop = settings.stop;
  return body;
}

function conversationFor(c) {
  const system = (settings.system || "").trim(), messages = [];
  for (const m of sentMessages(c)) {
    const content = m.role === "user" ? contentOf(m) : m.content, previous = messages[messages.length - 1];  // attach.js
    // Two messages of one role in a row (a question that got no answer, then another) are one turn, as in
    // the terminal chat: strict templates (Gemma's) refuse anything but user/assistant alternation.
    if (m.toolCalls && m.toolCalls.length) messages.push(...toolMessages(m));  // tools.js
    else if (previous && previous.role === m.role && !previous.tool_calls) previous.content = joinContent(previous.content, content);
    else messages.push(m.reasoning ? {role: m.role, content, reasoning_content: m.reasoning} : {role: m.role, content});
  }
  return system ? [{role: "system", content: system}, ...messages] : messages;
}

function promptOf(c) {  // raw mode: the text so far, files before the piece they came with
  return sentMessages(c).map(m => (m.role === "user" ? withFiles(m) : m.content)).join("");
}

function withFiles(message) {
  if (!message.context) return message.content;
  return message.context + "\n\n" + message.content;
}

// The request for the reply to `c` as it stands; a refusal for length drops one more of the oldest turns
// and asks again (the count before it was the server's, but a setting or a race can make it short).
async function requestReply(c, raw, continuing, signal) {
  for (;;) {
    const fields = raw ? {prompt: promptOf(c)} : {messages: conversationFor(c)};
    if (!raw && mcpTools.size) fields.tools = offeredTools();  // mcp.js
    if (continuing) fields.continue_final_message = true;
    const response = await api(raw ? "/v1/completions" : "/v1/chat/completions",
                                {method: "POST", signal, body: JSON.stringify(requestBody(fields))});
    if (response.ok) return response;
    const error = await errorOf(response);
    if (error.code !== "context_length_exceeded") throw error;
    if (!dropOldest(c).length) throw tooLong(null, continuing);
    if (chat() === c) render();
  }
}

// Streams a reply to `c` (its last message is the user's; with `continuing`, a reply to go on with).
// `fresh`: the input's text and attachments just sent, given back if the message cannot fit at all.
// `fork`: the versions this reply joins as the newest (a regenerated reply, branches.js).
async function generate(c = chat(), {continuing = false, fresh = null, fork = null} = {}) {
  if (!c || running.has(c.id)) return;
  const raw = !!settings.raw, controller = new AbortController(), signal = controller.signal;
  running.set(c.id, controller);
  if (chat() === c) { hideBanner(); render(); }  // Stop for Send; an unanswered turn loses its Retry
  let reply = null, usage = null, timings = null, finish = null, firstToken = null, scheduled = false, pieces = 0;
  const started = performance.now();
  const paint = () => {
    scheduled = false;
    if (chat() !== c) return;  // in the background: drawn from the saved text when its chat is shown
    const bubble = log.querySelector(`[data-index="${c.messages.indexOf(reply)}"]`);
    if (!bubble) return;
    // Follow the reply only if the reader has not scrolled up to read something else.
    const following = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    if (raw) bubble.textContent = reply.content;
    else renderMarkdown(bubble, reply.content);
    if (reply.reasoning) showThought(bubble, reply);
    if (reply.toolCalls) {
      for (const box of bubble.parentNode.querySelectorAll(".tool-call")) box.remove();
      showToolCalls(bubble.parentNode, reply);
    }
    if (following) log.scrollTop = log.scrollHeight;
  };
  try {
    if (await makeRoom(c, raw, continuing, signal)) save();
    if (continuing) {
      reply = c.messages[c.messages.length - 1];
      // The server continues the reply with its trailing blanks trimmed (runtime/server/translate.py).
      reply.content = reply.content.trimEnd();
      delete reply.stopped; delete reply.cut; delete reply.stats;
    } else {
      reply = {role: "assistant", content: ""};
      if (fork) reply.fork = fork;
      c.messages.push(reply);
    }
    reply.pending = true;  // saved with it: a reload mid-reply finds it stopped (store.js)
    c.updated = Date.now();
    save();
    if (chat() === c) render();
    const response = await requestReply(c, raw, continuing, signal);
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw Object.assign(new Error(chunk.error.message), {code: chunk.error.code});
        if (chunk.usage) usage = chunk.usage;
        if (chunk.timings) timings = chunk.timings;
        const choice = chunk.choices && chunk.choices.length ? chunk.choices[0] : {};
        if (choice.finish_reason) finish = choice.finish_reason;
        const piece = raw ? choice.text : choice.delta && choice.delta.content;
        for (const call of (!raw && choice.delta && choice.delta.tool_calls) || []) {
          addToolCall(reply, call);  // tools.js: its arguments drawn as they stream
          if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        }
        const thought = !raw && choice.delta && choice.delta.reasoning_content;  // a thinking model's
        if (thought) {
          if (firstToken === null) firstToken = performance.now();
          reply.reasoning = (reply.reasoning || "") + thought;
          reply.thoughtPieces = (reply.thoughtPieces || 0) + 1;
          pieces++;
          saveSoon();
          if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        }
        if (piece) {
          if (firstToken === null) firstToken = performance.now();
          reply.content += piece;
          pieces++;
          saveSoon();
          if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        }
      }
    }
    const cut = cutOf(finish, usage);
    if (cut) reply.cut = cut;
    if (usage) showStats(c, reply, usage, timings, firstToken || started);
  } catch (error) {
    const stopped = error.name === "AbortError";  // Stop, or the chat deleted
    // A reply that failed before its first word goes, leaving its question unanswered (with a Retry);
    // a new version that failed so gives the one before it back (branches.js).
    if (reply && !reply.content && !continuing && !stopped) dropVersion(c, c.messages.indexOf(reply));
    else if (reply) reply.stopped = true;
    // Stopped: no usage comes, so the stats count the pieces streamed (one token each) and the prompt as
    // fit.js counted it, and the gauge moves with them.
    if (reply && stopped && pieces) {
      showStats(c, reply, {prompt_tokens: promptCounts.get(c) || 0, completion_tokens: pieces}, null, firstToken || started);
    }
    if (!stopped) failed(error, c, fresh);
  } finally {
    if (reply) delete reply.pending;
    running.delete(c.id);
    save();
    if (reply && reply.toolCalls && !reply.stopped) runToolCalls(c, reply);  // tools.js: then the model goes on
    if (chat() === c) { render(); input.focus(); }
  }
}

function showStats(c, reply, usage, timings, since) {
  const seconds = (performance.now() - since) / 1000;
  const speed = timings && timings.predicted_per_second ? timings.predicted_per_second
                                                       : usage.completion_tokens / Math.max(seconds, 1e-3);
  reply.stats = `${usage.completion_tokens} tokens, ${speed.toFixed(1)} tok/s, prompt ${usage.prompt_tokens} tokens`;
  c.lastUsage = usage;
}

// What went wrong, in the banner of the chat it happened in; a chat in the background keeps its Retry in
// the conversation instead (the unanswered question, or the stopped reply's Continue).
function failed(error, c, fresh) {
  if (error.kind === "too-long" && fresh) giveBack(c, fresh);
  if (chat() !== c) return;
  if (error.kind === "auth") {
    askForKey(() => generate(c));
    return;
  }
  const text = document.createElement("span");
  if (error instanceof TypeError) {  // fetch's own failure: nothing answered at all
    text.textContent = "error: the server is unreachable (is it still running?)";
    showBanner(text, button("Retry", () => { hideBanner(); generate(c); }));
  } else if (error.kind === "too-long") {
    const files = fresh ? fresh.attachments.length : c.messages.some(m => m.context && !m.dropped);
    text.textContent = error.message + (files ? " Or attach a smaller part of the file." : "");
    showBanner(text, button("OK", () => { hideBanner(); input.focus(); }));
  } else {
    text.textContent = "error: " + error.message;
    showBanner(text, button("Retry", () => { hideBanner(); generate(c); }));
  }
  banner.classList.add("error");
}

// A message that cannot fit goes back into the input (with its files) to be shortened, unsent.
function giveBack(c, fresh) {
  const index = c.messages.lastIndexOf(fresh.message);
  if (index >= 0) dropVersion(c, index);
  if (!c.messages.length) c.title = "";
  if (chat() !== c || input.value) return;
  input.value = fresh.text;
  attachments = fresh.attachments;
  showAttachments(); grow();
}
