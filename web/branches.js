// Versions, as llama-server's page keeps them: a regenerated reply or an edited message does not replace
// what was there, it starts another version of the conversation from that point, and < 2/3 > switches
// between them (the conversation follows the version shown). A chat's `messages` stays the branch on
// screen, which every other file reads as it always did; the versions left are kept on the message where
// they part: `fork = {tails, at}`, where tails[k] is version k's messages from there on and the one shown
// (k = at) is null, since it is the live tail itself. Only the tail's first message carries the fork, so
// nothing refers to itself and a chat stays plain JSON (saved, exported, imported).

// Cuts the conversation at `index` to start a new version there; returns the fork the new first message
// of that version must carry (forkAt's caller pushes it).
function forkAt(c, index) {
  const live = c.messages.splice(index);
  const fork = live[0].fork || {tails: [null], at: 0};
  delete live[0].fork;
  fork.tails[fork.at] = live;
  fork.tails.push(null);
  fork.at = fork.tails.length - 1;
  return fork;
}

// Shows version `k` of the conversation from `index` on.
function showVersion(c, index, k) {
  const fork = c.messages[index] && c.messages[index].fork;
  if (!fork || k < 0 || k >= fork.tails.length || k === fork.at || running.has(c.id)) return;
  const live = c.messages.splice(index);
  delete live[0].fork;
  fork.tails[fork.at] = live;
  const chosen = fork.tails[k];
  fork.tails[k] = null;
  fork.at = k;
  chosen[0].fork = fork;
  c.messages.push(...chosen);
  c.lastUsage = null;  // the gauge was the other version's
  save(); render();
}

// < 2/3 >, in the meta line of a message that has versions.
function versionSwitch(c, index) {
  const fork = c.messages[index].fork;
  if (!fork || fork.tails.length < 2) return null;
  const box = document.createElement("span");
  box.className = "versions";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Versions");
  const busy = running.has(c.id);
  const previous = button("‹", () => showVersion(c, index, fork.at - 1));
  const next = button("›", () => showVersion(c, index, fork.at + 1));
  previous.setAttribute("aria-label", "Previous version");
  next.setAttribute("aria-label", "Next version");
  previous.disabled = busy || fork.at === 0;
  next.disabled = busy || fork.at === fork.tails.length - 1;
  box.append(previous, label("version", `${fork.at + 1}/${fork.tails.length}`), next);
  return box;
}

// Takes away the version shown from `index` on (a new one that failed before its first word, or a message
// given back to be shortened) and shows the version before it again.
function dropVersion(c, index) {
  const fork = c.messages[index] && c.messages[index].fork;
  c.messages.splice(index);
  if (!fork) return;
  fork.tails.splice(fork.at, 1);
  fork.at = fork.tails.length - 1;
  const back = fork.tails[fork.at];
  fork.tails[fork.at] = null;
  if (fork.tails.length > 1) back[0].fork = fork;
  c.messages.push(...back);
}
