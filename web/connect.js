// The banner (errors, the API key's prompt), and the model the server serves: its name, its context (the
// gauge, and what fit.js fits a conversation into), and whether it has a chat template of its own.
function showBanner(...parts) {
  banner.replaceChildren(...parts);
  banner.hidden = false;
  banner.dataset.kind = "";
}
function hideBanner() { banner.hidden = true; banner.replaceChildren(); banner.dataset.kind = ""; }

function askForKey(then) {
  const field = document.createElement("input");
  field.type = "password"; field.placeholder = "API key"; field.setAttribute("aria-label", "API key");
  const text = document.createElement("span");
  text.textContent = "This server needs its API key (--api-key); it is kept for this browser session only.";
  const ok = button("Use this key", () => {
    if (!field.value) return;
    sessionStorage.setItem(KEY, field.value.trim());
    hideBanner(); then();
  });
  field.addEventListener("keydown", e => { if (e.key === "Enter") ok.click(); });
  showBanner(text, field, ok);
  field.focus();
}

async function loadModel() {
  for (;;) {
    let response = null;
    try { response = await api("/v1/models"); } catch (error) {
      if (error.kind === "auth") { $("model").textContent = "API key needed"; askForKey(loadModel); return; }
      $("model").textContent = "server not running";
      // Opened while the server is down (an installed app opens from the service worker's copy): said once,
      // gone when it answers.
      if (banner.hidden) {
        showBanner(label("", "The server is not running: start the llmpack file again (--server). This page " +
                             "connects by itself when it is back; your chats are kept in this browser."));
        banner.dataset.kind = "offline";
      }
    }
    if (response && response.ok) {
      if (banner.dataset.kind === "offline") hideBanner();
      const model = (await response.json()).data[0];
      modelName = model.id;
      nCtx = model.meta && model.meta.n_ctx;
      nCtxTrain = model.meta && model.meta.n_ctx_train;
      $("model").textContent = model.id;
      showContext(chat() && chat().lastUsage);
      suggestRaw(model);
      await loadModalities();  // attach.js: images and sounds, with a projector
      return;
    }
    if (response) $("model").textContent = "loading the model…";
    await new Promise(resolve => setTimeout(resolve, 1000));
  }
}

// A model without a template of its own (a base model) chats through ChatML, which it never learnt: the
// page offers raw mode once per model, and switches only if asked to.
function suggestRaw(model) {
  const box = $("suggest"), asked = load(RAW_SUGGESTED, []);
  if (settings.raw || !String(model.chat_template || "").includes(NO_TEMPLATE) || asked.includes(model.id)) {
    box.hidden = true;
    return;
  }
  const answer = raw => {
    asked.push(model.id);
    localStorage.setItem(RAW_SUGGESTED, JSON.stringify(asked));
    box.hidden = true;
    if (raw) setRaw(true);
    input.focus();
  };
  const text = document.createElement("span");
  text.textContent = "This model has no chat template of its own (chats use ChatML). If it is a base model, " +
                     "raw completion suits it better: it continues your text as it is.";
  box.replaceChildren(text, button("Use raw completion", () => answer(true)), button("Keep chatting", () => answer(false)));
  box.hidden = false;
}

function setRaw(on) {
  settings.raw = on;
  localStorage.setItem(SETTINGS, JSON.stringify(settings));
  render();
}
