// Attachments: files chosen with the Attach button or dropped onto the conversation or the input, read as
// text and sent as context with the next message; images and sounds go to attach.js. (Joined to chat.js into one script by build_page.py.)
const BINARY_TYPE = /^(image|audio|video|font)\/|^application\/(pdf|zip|gzip|octet-stream|x-(tar|bzip2|xz|7z-compressed|rar|executable|sharedlib))/;

async function attachFiles(files) {
  const refused = [];
  for (const file of files) {
    const type = mediaType(file);  // attach.js: an image or a sound
    if (type) {
      const problem = await attachMedia(file, type);
      if (problem) refused.push(problem);
      continue;
    }
    if (file.size > MAX_ATTACHMENT) { refused.push(`${file.name} is larger than 512 KiB`); continue; }
    // A NUL byte is what no text file holds and every binary format has (a type may be missing or wrong).
    const text = BINARY_TYPE.test(file.type) ? null : await file.text();
    if (text === null || text.includes("\u0000")) {
      refused.push(`${file.name} is not a text file: only text files can be attached`);
      continue;
    }
    attachments.push({name: file.name, text});
  }
  showAttachments();
  if (refused.length) {
    const text = document.createElement("span");
    text.textContent = "error: " + refused.join("; ");
    showBanner(text, button("OK", () => { hideBanner(); input.focus(); }));
    banner.dataset.kind = "attachment";
  } else if (banner.dataset.kind === "attachment") {
    hideBanner();  // the last refusal is old news once a file is taken
  }
  input.focus();
}

const hasFiles = event => !!event.dataTransfer && [...event.dataTransfer.types].includes("Files");
const dropZone = $("main");
dropZone.addEventListener("dragover", event => {
  if (!hasFiles(event)) return;  // dragged text goes into the input as usual
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  dropZone.classList.add("dropping");
});
dropZone.addEventListener("dragleave", event => {
  if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
});
dropZone.addEventListener("drop", event => {
  dropZone.classList.remove("dropping");
  if (!hasFiles(event)) return;
  event.preventDefault();
  attachFiles([...event.dataTransfer.files]);
});
// A file dropped anywhere else would make the browser leave the page (and the chat in progress) to show it.
for (const kind of ["dragover", "drop"]) {
  window.addEventListener(kind, event => { if (hasFiles(event)) event.preventDefault(); });
}
