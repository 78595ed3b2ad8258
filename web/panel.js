// The settings dialog and the model panel. The settings are the sampling fields the server honours
// (runtime/server/schemas.py's SamplingFields; llama-server's page also offers typical-p, XTC, DRY and
// dynamic temperature, which this server's sampler does not have, so they are not offered to be ignored);
// an empty field shows the server's own value, read from /props. The model panel shows /props and
// /v1/models: the name clients send (the executable's), the context, the template, the sequences.
let props = null;

async function loadProps() {
  try {
    const response = await api("/props");
    if (response.ok) props = await response.json();
  } catch (e) { /* the panel says the server did not answer */ }
  return props;
}

function loadSettings() {
  $("set-system").value = settings.system || "";
  $("set-raw").checked = !!settings.raw;
  $("set-stop").value = (settings.stop || []).join("\n");
  const defaults = (props && props.default_generation_settings && props.default_generation_settings.params) || {};
  const serverName = {max_tokens: "n_predict"};
  for (const name of NUMBERS) {
    $("set-" + name).value = settings[name] ?? "";
    const value = defaults[serverName[name] || name];
    if (typeof value === "number") $("set-" + name).placeholder = name === "seed" && value < 0 ? "random" : String(value);
  }
}
$("settings-form").addEventListener("input", () => {
  const wasRaw = !!settings.raw;
  settings = {system: $("set-system").value, raw: $("set-raw").checked};
  for (const name of NUMBERS) {
    const value = $("set-" + name).value;
    if (value !== "" && !Number.isNaN(Number(value))) settings[name] = value;
  }
  // Stop strings as typed, a line each; "\n" written out stands for a line break.
  const stop = $("set-stop").value.split("\n").filter(line => line !== "").map(line => line.replaceAll("\\n", "\n"));
  if (stop.length) settings.stop = stop;
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
  if (settings.raw !== wasRaw) { render(); if (settings.raw) $("suggest").hidden = true; }
});
$("settings-button").addEventListener("click", async () => {
  loadSettings(); showMcp(); $("settings").showModal();
  if (!props && await loadProps() && $("settings").open) { loadSettings(); showMcp(); }
});
$("settings").addEventListener("close", () => input.focus());

function fact(name, value) {
  const term = document.createElement("dt"), detail = document.createElement("dd");
  term.textContent = name; detail.textContent = value;
  return [term, detail];
}

async function showModelPanel() {
  $("model-panel").showModal();
  const p = await loadProps();
  if (!p) { $("model-facts").replaceChildren(...fact("Server", "did not answer /props")); return; }
  const file = String(p.model_path || "").split(/[\\/]/).pop();
  const facts = [["Name", p.model_alias], ["File", file], ["Name in the GGUF", p.general_name],
                 ["Context", `${p.n_ctx} tokens per sequence` + (nCtxTrain ? ` (trained for ${nCtxTrain})` : "")],
                 ["Sequences", `${p.total_slots} at once (-np)`],
                 ["Template", p.chat_template ? "the model's own" : "none"],
                 ["Special tokens", `BOS ${p.bos_token || "-"}, EOS ${p.eos_token || "-"}`],
                 ["Inputs", ["text", ...Object.keys(p.modalities || {}).filter(k => p.modalities[k])].join(", ")],
                 ["Server", p.build_info]];
  $("model-facts").replaceChildren(...facts.filter(f => f[1] !== undefined && f[1] !== "").flatMap(f => fact(...f)));
  $("model-template").textContent = p.chat_template || "(none: chats use ChatML)";
  $("model-props").textContent = JSON.stringify(p, null, 2);
}
$("model").addEventListener("click", showModelPanel);
for (const id of ["model-panel", "help"]) $(id).addEventListener("close", () => input.focus());
