// MCP servers (the Model Context Protocol, over its streamable HTTP transport), as llama-server's page
// has them: the user adds a server's URL in the settings, the page connects to it from the browser
// (initialize, then tools/list), offers its tools to the model in the chat request, and calls a tool when
// the model asks (tools.js). The browser talks to the MCP server directly, so the server must allow this
// page's origin (CORS), or, as with llama-server's page, goes through this server's /cors-proxy where it
// was started with --ui-mcp-proxy (/props says cors_proxy_enabled). Kept in this browser:
// "llmpack-mcp" = {servers: [{url, token, proxy}], confirm}.
const MCP = "llmpack-mcp", MCP_PROTOCOL = "2025-06-18";
let mcp = Object.assign({servers: [], confirm: true}, load(MCP, {}));
const mcpState = new Map();  // url -> {session, protocol, status, tools}
const mcpTools = new Map();  // tool name offered to the model -> {server, name, tool}
let rpcId = 0;

function saveMcp() { localStorage.setItem(MCP, JSON.stringify(mcp)); }

// An answer is JSON, or an SSE stream whose events carry JSON-RPC messages: the one with our id is the answer.
async function answerOf(response, id) {
  if (!(response.headers.get("Content-Type") || "").includes("text/event-stream")) return response.json();
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) throw new Error("the MCP server's stream ended without an answer");
    buffer += decoder.decode(value, {stream: true}).replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, end).split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trim()).join("\n");
      buffer = buffer.slice(end + 2);
      if (!data) continue;
      const message = JSON.parse(data);
      if (message.id === id) { reader.cancel().catch(() => {}); return message; }
    }
  }
}

async function rpc(server, method, params, notification = false) {
  const state = mcpState.get(server.url) || {};
  const headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"};
  if (state.session) headers["Mcp-Session-Id"] = state.session;
  if (state.protocol) headers["MCP-Protocol-Version"] = state.protocol;
  if (server.token) headers.Authorization = "Bearer " + server.token;
  const message = {jsonrpc: "2.0", method, params};
  if (!notification) message.id = ++rpcId;
  const response = server.proxy ? await viaProxy(server.url, headers, JSON.stringify(message))
                                 : await fetch(server.url, {method: "POST", headers, body: JSON.stringify(message)});
  const session = response.headers.get("Mcp-Session-Id");
  if (session) state.session = session;
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`.trim());
  if (notification) return null;
  const answer = await answerOf(response, message.id);
  if (answer.error) throw new Error(answer.error.message || "error " + answer.error.code);
  return answer.result;
}

// /cors-proxy (--ui-mcp-proxy): the headers for the MCP server travel prefixed, as llama-server's page
// sends them; api() adds this server's own key.
function viaProxy(url, headers, body) {
  const proxied = {};
  for (const [name, value] of Object.entries(headers)) proxied["X-Llama-Server-Proxy-Header-" + name] = value;
  return api("/cors-proxy?url=" + encodeURIComponent(url), {method: "POST", headers: proxied, body});
}

async function connectMcp(server) {
  const state = {status: "connecting…", tools: []};
  mcpState.set(server.url, state);
  showMcp();
  try {
    const init = await rpc(server, "initialize", {protocolVersion: MCP_PROTOCOL, capabilities: {},
                                                  clientInfo: {name: "llmpack web page", version: "1"}});
    state.protocol = init.protocolVersion || MCP_PROTOCOL;
    await rpc(server, "notifications/initialized", {}, true);
    let cursor;
    do {
      const page = await rpc(server, "tools/list", cursor ? {cursor} : {});
      state.tools.push(...(page.tools || []));
      cursor = page.nextCursor;
    } while (cursor && state.tools.length < 1000);
    state.status = `${state.tools.length} tool${state.tools.length === 1 ? "" : "s"}`;
  } catch (error) {
    // fetch's own TypeError: refused, or no CORS answer for this page's origin.
    const proxyHint = props && props.cors_proxy_enabled ? ", or add it again through this server" : "";
    state.status = "error: " + (error instanceof TypeError ? `no answer (is it running, and does it allow this page (CORS)${proxyHint}?)`
                                                           : error.message);
    state.tools = [];
  }
  listTools();
  showMcp();
}

// The tools offered to the model, under names unique across servers (a second "search" is "search_2").
function listTools() {
  mcpTools.clear();
  for (const server of mcp.servers) {
    for (const tool of (mcpState.get(server.url) || {}).tools || []) {
      let name = tool.name, n = 1;
      while (mcpTools.has(name)) name = `${tool.name}_${++n}`;
      mcpTools.set(name, {server, name: tool.name, tool});
    }
  }
}

function offeredTools() {
  return [...mcpTools].map(([name, t]) => ({type: "function", function: {
    name, description: t.tool.description || "", parameters: t.tool.inputSchema || {type: "object", properties: {}}}}));
}

// What tools/call answers, as the text the model reads: its text parts (other kinds are named).
async function callTool(name, args) {
  const found = mcpTools.get(name);
  const result = await rpc(found.server, "tools/call", {name: found.name, arguments: args});
  const text = (result.content || []).map(part => (part.type === "text" ? part.text : `[${part.type} content]`)).join("\n");
  return {text: text || JSON.stringify(result.structuredContent ?? ""), error: !!result.isError};
}

// --- the settings' MCP section ------------------------------------------------------------------------
function showMcp() {
  $("mcp-confirm").checked = mcp.confirm;
  // Offered where the server has the proxy on (it reads /props again when the settings open).
  $("mcp-proxy").disabled = !(props && props.cors_proxy_enabled);
  $("mcp-proxy").parentNode.title = $("mcp-proxy").disabled ? "start the server with --ui-mcp-proxy to use this" : "";
  $("mcp-list").replaceChildren(...mcp.servers.map(server => {
    const item = document.createElement("li"), state = mcpState.get(server.url) || {status: ""};
    const remove = button("Remove", () => {
      mcp.servers = mcp.servers.filter(s => s !== server);
      mcpState.delete(server.url); saveMcp(); listTools(); showMcp();
    });
    remove.setAttribute("aria-label", "Remove " + server.url);
    item.append(label("mcp-url", server.url), label("mcp-status", (server.proxy ? "through this server · " : "") + state.status), remove);
    return item;
  }));
}

$("mcp-add").addEventListener("click", () => {
  const url = $("mcp-new").value.trim();
  if (!/^https?:\/\/\S+$/.test(url)) { $("mcp-new").setCustomValidity("an http:// or https:// URL"); $("mcp-new").reportValidity(); return; }
  $("mcp-new").setCustomValidity("");
  if (!mcp.servers.some(s => s.url === url)) {
    const server = {url};
    if ($("mcp-token").value.trim()) server.token = $("mcp-token").value.trim();
    if ($("mcp-proxy").checked) server.proxy = true;
    mcp.servers.push(server);
    saveMcp();
    connectMcp(server);
  }
  $("mcp-new").value = ""; $("mcp-token").value = "";
});
$("mcp-new").addEventListener("keydown", event => {
  if (event.key === "Enter") { event.preventDefault(); $("mcp-add").click(); }
});
$("mcp-confirm").addEventListener("change", () => { mcp.confirm = $("mcp-confirm").checked; saveMcp(); });
