// Tool calls in the conversation. A reply's tool calls (streamed in `delta.tool_calls`, arguments in
// pieces) are kept on it as `toolCalls: [{id, name, arguments, status, result}]` and shown under it,
// whatever asked for them: a tool of an MCP server (mcp.js) is called, after the user's yes unless the
// settings say otherwise, and its result goes back to the model, which replies again; a tool no server
// offers is shown and left (the model called it unasked: a forced grammar, a template's habit).
const TOOL_ROUNDS = 8;  // tool-calling replies in a row before the page stops asking the model again
const asking = new Map();  // call id -> resolve(yes) of the question on screen
const DECLINED = "The user declined this tool call.";

function addToolCall(reply, delta) {
  const calls = reply.toolCalls || (reply.toolCalls = []);
  const index = Number.isInteger(delta.index) ? delta.index : calls.length;
  const call = calls[index] || (calls[index] = {id: "", name: "", arguments: ""});
  if (delta.id) call.id = delta.id;
  if (delta.function && delta.function.name) call.name = delta.function.name;
  if (delta.function && delta.function.arguments) call.arguments += delta.function.arguments;
}

// The messages the chat API wants for a reply with tool calls: the reply with its calls, then each result.
function toolMessages(m) {
  const ids = m.toolCalls.map((call, i) => call.id || `call_${i}`);
  const calls = m.toolCalls.map((call, i) => ({id: ids[i], type: "function",
                                               function: {name: call.name, arguments: call.arguments || "{}"}}));
  // A call never run (no server offered it, or a reload stopped it) still gets its answer.
  const results = m.toolCalls.map((call, i) => ({role: "tool", tool_call_id: ids[i],
                                                 content: call.result ?? "This tool is not available."}));
  return [{role: "assistant", content: m.content, tool_calls: calls}, ...results];
}

function showToolCalls(turn, message) {
  for (const call of message.toolCalls) {
    const box = document.createElement("details");
    box.className = "tool-call " + (call.status || "");
    box.open = call.status === "asking" || call.status === "error" || !!message.pending;
    const summary = document.createElement("summary");
    const status = message.pending ? "writing…" : TOOL_STATUS[call.status] || call.status || "";
    summary.append(label("tool-name", "tool: " + call.name), label("tool-status", status));
    const args = document.createElement("pre");
    args.className = "tool-arguments";
    try { args.textContent = JSON.stringify(JSON.parse(call.arguments || "{}"), null, 2); } catch (e) { args.textContent = call.arguments; }
    box.append(summary, args);
    if (call.result !== undefined) {
      const result = document.createElement("pre");
      result.className = "tool-result"; result.textContent = call.result;
      box.appendChild(result);
    }
    if (call.status === "asking" && asking.has(call.id)) {
      const row = document.createElement("div");
      row.className = "tool-question";
      row.append(label("", "Run this tool?"), button("Run", () => asking.get(call.id)(true)),
                 button("Deny", () => asking.get(call.id)(false)));
      box.appendChild(row);
    }
    turn.insertBefore(box, turn.querySelector(".meta"));
  }
}
const TOOL_STATUS = {asking: "waiting for your yes", running: "running…", done: "done", denied: "denied",
                     error: "failed", unknown: "no MCP server offers it", interrupted: "interrupted"};

// After a reply that called tools: each call run (or declined), then the model asked again with the results.
async function runToolCalls(c, reply) {
  const repaint = () => { save(); if (chat() === c) render(); };
  let answered = 0;
  for (const call of reply.toolCalls) {
    if (!call.id) call.id = "call_" + newId();
    if (!mcpTools.has(call.name)) { call.status = "unknown"; continue; }
    let args;
    try { args = JSON.parse(call.arguments || "{}"); } catch (e) {
      call.status = "error"; call.result = "error: the arguments are not JSON"; answered++; continue;
    }
    if (mcp.confirm) {
      call.status = "asking";
      const yes = await new Promise(resolve => { asking.set(call.id, resolve); repaint(); });
      asking.delete(call.id);
      if (!yes) { call.status = "denied"; call.result = DECLINED; answered++; repaint(); continue; }
    }
    call.status = "running"; repaint();
    try {
      const result = await callTool(call.name, args);
      call.status = result.error ? "error" : "done"; call.result = result.text;
    } catch (error) {
      call.status = "error"; call.result = "error: " + error.message;
    }
    answered++; repaint();
  }
  repaint();
  if (answered && answered === reply.toolCalls.length && chats.includes(c) && toolRounds(c) < TOOL_ROUNDS) generate(c);
}

function toolRounds(c) {
  let rounds = 0;
  for (let i = c.messages.length - 1; i >= 0 && c.messages[i].role === "assistant"; i--) if (c.messages[i].toolCalls) rounds++;
  return rounds;
}

// A reload while a call waited or ran: it is over, shown as such.
function recoverToolCalls(list) {
  for (const c of list) for (const m of c.messages) for (const call of m.toolCalls || []) {
    if (call.status === "asking" || call.status === "running") call.status = "interrupted";
  }
  return list;
}
