// Images and sounds, when the server's model has a projector (/props' modalities, as llama-server says
// them): attached with the Attach button, dropped or pasted, shown as thumbnails to remove before sending,
// sent as image_url / input_audio parts (base64 data: URLs), shown in the conversation. A message keeps
// references ({id, name, kind, mime, size}); the files themselves are kept in this browser's IndexedDB,
// up to MEDIA_BUDGET in all: past it a file is still sent and shown while the page is open, but not kept,
// and after a reload its message shows its name as "not kept" and goes without it. Files no conversation
// holds any more (a deleted chat's) are removed when the page opens.
const MEDIA_DB = "llmpack-media", MEDIA_BUDGET = 100 * 1024 * 1024;
// The server reads a request of 8 MiB at most (base64 makes a file a third larger): a larger image is
// sent resized (its long side to MAX_SIDE, JPEG), a larger sound is refused.
const MAX_MEDIA = 3 * 1024 * 1024, MAX_SIDE = 2048;
const MEDIA_TYPES = {png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", bmp: "image/bmp",
                     wav: "audio/wav", mp3: "audio/mpeg", flac: "audio/flac"};
let modalities = {vision: false, audio: false};
const mediaData = new Map();  // id -> data: URL, of every file loaded or attached in this page
let mediaBytes = 0;  // what IndexedDB holds

const TYPE_NAMES = {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
                    "audio/mp3": "audio/mpeg", "audio/x-flac": "audio/flac", "image/jpg": "image/jpeg",
                    "image/x-ms-bmp": "image/bmp"};

// The file's type when it is one this server decodes (media_check.py), by its type or else its name; another
// image, sound or video type as it is (refused by attachMedia); null for anything else (a text file).
function mediaType(file) {
  const type = TYPE_NAMES[file.type] || file.type;
  if (Object.values(MEDIA_TYPES).includes(type)) return type;
  const byName = MEDIA_TYPES[(file.name.split(".").pop() || "").toLowerCase()];
  return byName || (/^(image|audio|video)\//.test(file.type) ? file.type : null);
}

async function loadModalities() {
  try {
    const response = await api("/props");
    if (response.ok) modalities = Object.assign({vision: false, audio: false}, (await response.json()).modalities);
  } catch (e) { /* an older server: text only */ }
  const reads = [modalities.vision && "images", modalities.audio && "sounds (WAV, MP3, FLAC)"].filter(Boolean);
  const attach = document.querySelector("label.attach"), file = $("file");
  attach.querySelector(".sr").textContent = reads.length ? " a file" : " a text file";
  if (reads.length) {
    attach.title = `Attach ${reads.join(" or ")}, or a text file as context (or drop or paste it here)`;
    file.accept = [file.dataset.text || (file.dataset.text = file.accept),
                   ...Object.entries(MEDIA_TYPES).filter(([, t]) => modalities[t.startsWith("image") ? "vision" : "audio"])
                     .map(([ext, t]) => `.${ext},${t}`)].join(",");
  } else {
    attach.title = "Attach a text file as context (or drop it onto the page). Images and sounds need a model " +
                   "with a projector (--mmproj); this one reads text only.";
  }
  file.multiple = true;
}

// One image or sound for the next message, or why not (a line for the banner).
async function attachMedia(file, type) {
  if (type.startsWith("video/")) return `${file.name}: videos are not read (images and sounds are, with a projector)`;
  const kind = type.startsWith("image/") ? "image" : "audio";
  if (settings.raw) return `${file.name}: raw completion sends text only`;
  if (!modalities[kind === "image" ? "vision" : "audio"]) {
    return `${file.name}: ${kind === "image" ? "images" : "sounds"} need a model with a projector that reads them ` +
           `(--mmproj); this one ${modalities.vision || modalities.audio ? "does not" : "reads text only"}`;
  }
  if (!Object.values(MEDIA_TYPES).includes(type)) return `${file.name}: not a PNG, JPEG, GIF, BMP, WAV, MP3 or FLAC file`;
  let blob = file, note = "";
  if (file.size > MAX_MEDIA) {
    if (kind === "audio") return `${file.name} is larger than ${MAX_MEDIA >> 20} MiB`;
    try { [blob, note] = await shrink(file); } catch (e) { return `${file.name}: this browser cannot read the image`; }
  }
  const data = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result); reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  const id = newId();
  mediaData.set(id, data.replace(/^data:[^;,]*/, "data:" + (blob.type || type)));
  attachments.push({id, name: file.name, kind, mime: blob.type || type, size: blob.size, note});
  return null;
}

async function shrink(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise(resolve => canvas.toBlob(resolve, "image/jpeg", 0.9));
  if (!blob || blob.size > MAX_MEDIA) throw new Error("too large");
  return [blob, `resized from ${bitmap.width}x${bitmap.height}`];
}

// A file in the input's tray (before sending) or in a message: a thumbnail, or the sound's player.
function mediaElement(ref, looked = true) {
  const data = mediaData.get(ref.id);
  if (!data) {
    return label("media-missing", ref.unkept ? `${ref.name} (not kept: past the ${MEDIA_BUDGET >> 20} MB of files this ` +
                 "browser keeps)" : looked ? `${ref.name} (no longer in this browser)` : ref.name);
  }
  let element;
  if (ref.kind === "image") {
    element = document.createElement("img");
    element.className = "thumb"; element.alt = ref.name; element.title = ref.name + (ref.note ? ` (${ref.note})` : "");
  } else {
    element = document.createElement("audio");
    element.controls = true; element.title = ref.name;
  }
  element.src = data;
  return element;
}

function mediaChip(a, i) {
  const chip = document.createElement("span");
  chip.className = "media-chip";
  const remove = button("×", () => { attachments.splice(i, 1); showAttachments(); });
  remove.setAttribute("aria-label", "Remove " + a.name);
  chip.append(mediaElement(a), label("media-name", a.kind === "audio" ? a.name : ""), remove);
  return chip;
}

// The message's files, above its bubble; loaded from IndexedDB when not in memory yet.
function showMedia(turn, message) {
  const box = document.createElement("div");
  box.className = "media";
  const draw = looked => box.replaceChildren(...message.media.map(ref => {
    const element = mediaElement(ref, looked);
    if (element.tagName !== "IMG") return element;
    const view = button("", () => viewImage(ref));  // the image at its size, in a dialog
    view.className = "view"; view.setAttribute("aria-label", "View " + ref.name);
    view.appendChild(element);
    return view;
  }));
  const missing = message.media.some(ref => !mediaData.has(ref.id));
  draw(!missing);
  turn.insertBefore(box, turn.firstChild);
  if (missing) loadMedia(message.media).then(() => draw(true));
}

function viewImage(ref) {
  let viewer = $("viewer");
  if (!viewer) {
    viewer = document.createElement("dialog");
    viewer.id = "viewer"; viewer.setAttribute("aria-label", "Image");
    viewer.addEventListener("click", () => viewer.close());  // anywhere, as Esc
    document.body.appendChild(viewer);
  }
  const image = document.createElement("img");
  image.src = mediaData.get(ref.id); image.alt = ref.name;
  viewer.replaceChildren(image, label("viewer-name", ref.name + (ref.note ? ` (${ref.note})` : "")));
  viewer.showModal();
}

// The references a sent message keeps; the files go to IndexedDB, within the budget.
function keepMedia(list) {
  return list.map(a => {
    const ref = {id: a.id, name: a.name, kind: a.kind, mime: a.mime, size: a.size};
    if (a.note) ref.note = a.note;
    if (mediaBytes + a.size > MEDIA_BUDGET) ref.unkept = true;
    else { mediaBytes += a.size; mediaStore("readwrite", store => store.put({data: mediaData.get(a.id), size: a.size}, a.id)); }
    return ref;
  });
}

// What a user message sends: its text (with any text files before it), then its files as content parts.
function contentOf(m) {
  const text = withFiles(m);  // stream.js
  const files = (m.media || []).filter(ref => mediaData.has(ref.id));
  if (!files.length) return text;
  return [{type: "text", text}, ...files.map(ref => {
    const data = mediaData.get(ref.id);
    if (ref.kind === "image") return {type: "image_url", image_url: {url: data}};
    return {type: "input_audio", input_audio: {data: data.slice(data.indexOf(",") + 1),
                                               format: ref.mime === "audio/mpeg" ? "mp3" : ref.mime.split("/")[1]}};
  })];
}

function joinContent(before, after) {  // two turns of one role merged: text, or parts when either has files
  if (typeof before === "string" && typeof after === "string") return before + "\n\n" + after;
  const parts = content => typeof content === "string" ? [{type: "text", text: content}] : content;
  return [...parts(before), {type: "text", text: "\n\n"}, ...parts(after)];
}

const hasMedia = c => sentMessages(c).some(m => m.media && m.media.length);

async function loadMedia(refs) {
  const wanted = refs.filter(ref => !mediaData.has(ref.id) && !ref.unkept);
  await Promise.all(wanted.map(ref => mediaStore("readonly", store => store.get(ref.id)).then(found => {
    if (found) mediaData.set(ref.id, found.data);
  })));
}

function mediaStore(mode, work) {
  return new Promise(resolve => {
    const open = indexedDB.open(MEDIA_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("files");
    open.onerror = () => resolve(null);  // no IndexedDB (a private window may refuse it): nothing is kept
    open.onsuccess = () => {
      const transaction = open.result.transaction("files", mode), request = work(transaction.objectStore("files"));
      transaction.oncomplete = () => { open.result.close(); resolve(request && request.result); };
      transaction.onerror = transaction.onabort = () => { open.result.close(); resolve(null); };
    };
  });
}

// When the page opens: the files no conversation holds any more go, and what the rest take is counted.
// The chats are read when the sweep's transaction runs, not when it was asked for: a file kept in the
// meantime (a message sent while the page was still opening) belongs to a chat by then and stays.
// (IndexedDB runs the two transactions in order, so a file kept after the sweep began is not seen.)
async function sweepMedia() {
  let held = null, total = 0;
  await mediaStore("readwrite", store => {
    const cursor = store.openCursor();
    cursor.onsuccess = () => {
      held = held || new Set(chats.flatMap(c => allMessages(c)).flatMap(m => (m.media || []).map(ref => ref.id)));
      const at = cursor.result;
      if (!at) { mediaBytes += total; return; }
      if (held.has(at.key)) total += at.value.size; else at.delete();
      at.continue();
    };
    return cursor;
  });
}

function allMessages(c) {  // the messages of every version (branches.js keeps the others in `fork.tails`)
  const seen = [];
  const walk = list => { for (const m of list || []) { seen.push(m); if (m.fork) for (const tail of m.fork.tails) walk(tail); } };
  walk(c.messages);
  return seen;
}

$("input").addEventListener("paste", event => {
  const files = [...(event.clipboardData && event.clipboardData.files) || []];
  if (!files.length) return;  // text is pasted as usual
  event.preventDefault();
  attachFiles(files);  // files.js
});
