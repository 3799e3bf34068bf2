// Keyboard review for the quarantine grid and the sample page. The pages work without this file:
// the decision form posts normally; here the same form is sent with fetch so the grid updates in
// place, and keys move through the samples.
(function () {
  "use strict";
  const body = document.body;
  const page = body.dataset.page;
  const form = document.getElementById("decide-form");
  const flash = document.getElementById("flash");
  const tiles = page === "quarantine" ? Array.from(document.querySelectorAll("#grid .tile")) : [];
  let current = -1;

  function say(text, isError) {
    flash.textContent = text;
    flash.className = isError ? "error" : "ok";
  }

  function focusTile(i) {
    if (!tiles.length) return;
    current = Math.max(0, Math.min(tiles.length - 1, i));
    tiles.forEach(function (t) { t.classList.remove("current"); });
    tiles[current].classList.add("current");
    tiles[current].scrollIntoView({ block: "nearest" });
  }

  function picked() {
    return tiles.filter(function (t) {
      const box = t.querySelector(".pick");
      return box && box.checked;
    });
  }

  function showCount() {
    const el = document.getElementById("selected-count");
    if (el) el.textContent = picked().length + " selected";
  }

  function targets() {
    if (page === "sample") return [body.dataset.sample];
    const sel = picked();
    if (sel.length) return sel.map(function (t) { return t.dataset.sample; });
    return current >= 0 ? [tiles[current].dataset.sample] : [];
  }

  function markDecided(id, status, newLabel) {
    const text = status + (newLabel !== null ? " \u2192 " + newLabel : "");
    tiles.forEach(function (t) {
      if (t.dataset.sample !== id) return;
      t.className = t.className.replace(/\bstatus-\w+/, "status-" + status);
      t.dataset.status = status;
      t.querySelector(".status").textContent = text;
    });
    const el = document.getElementById("entry-status");
    if (page === "sample" && el) {
      el.textContent = text;
      el.className = "status-" + status;
    }
  }

  function nextPending() {
    for (let i = current + 1; i < tiles.length; i++) {
      if (tiles[i].dataset.status === "pending") return focusTile(i);
    }
  }

  async function decide(action) {
    if (!form) {
      say("Read-only: log in with a reviewer token to decide.", true);
      return;
    }
    const ids = targets();
    if (!ids.length) {
      say("Nothing to decide on: select samples with x or highlight one with j/k.", true);
      return;
    }
    const select = document.getElementById("new-label");
    if (action === "relabel" && select.value === "") {
      select.focus();
      say("Pick the class to relabel to, then press Enter.", true);
      return;
    }
    const data = new URLSearchParams();
    data.append("csrf_token", form.elements.csrf_token.value);
    data.append("action", action);
    ids.forEach(function (id) { data.append("sample_id", id); });
    data.append("note", document.getElementById("note").value);
    if (action === "relabel") data.append("new_label", select.value);
    let resp;
    try {
      resp = await fetch(form.dataset.decideUrl, {
        method: "POST",
        body: data,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (err) {
      say("Could not reach the server: " + err, true);
      return;
    }
    if (!resp.ok) {
      say(await resp.text(), true);
      return;
    }
    const out = await resp.json();
    const label = action === "relabel" ? select.value : null;
    out.results.forEach(function (r) { markDecided(r.sample_id, r.status, label); });
    const changed = out.results.filter(function (r) { return r.changed; }).length;
    let msg = action + ": " + changed + " decided by " + out.reviewer;
    if (changed < out.results.length) msg += ", " + (out.results.length - changed) + " already so";
    if (out.approved_version) msg += " \u00b7 every entry decided: clean version " + out.approved_version + " approved";
    say(msg, false);
    document.getElementById("note").value = "";
    if (page === "quarantine") {
      tiles.forEach(function (t) {
        const box = t.querySelector(".pick");
        if (box) box.checked = false;
      });
      showCount();
      nextPending();
    }
  }

  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (e.submitter && e.submitter.value) decide(e.submitter.value);
    });
  }
  document.querySelectorAll(".pick").forEach(function (box) { box.addEventListener("change", showCount); });
  tiles.forEach(function (t, i) {
    t.addEventListener("click", function () { focusTile(i); });
  });
  const helpToggle = document.getElementById("help-toggle");
  if (helpToggle) {
    helpToggle.addEventListener("click", function () {
      const help = document.getElementById("help");
      help.hidden = !help.hidden;
    });
  }
  if (tiles.length) focusTile(0);

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = e.target.tagName;
    const typing =
      (tag === "INPUT" && ["checkbox", "radio", "button", "submit"].indexOf(e.target.type) < 0) ||
      tag === "SELECT" ||
      tag === "TEXTAREA";
    if (typing) {
      if (e.key === "Escape") {
        e.target.blur();
      } else if (e.key === "Enter" && e.target.id === "new-label") {
        e.preventDefault();
        e.target.blur();
        decide("relabel");
      } else if (e.key === "Enter" && e.target.id === "note") {
        e.preventDefault();
        e.target.blur();
      }
      return;
    }
    const go = function (attr) {
      if (body.dataset[attr]) window.location.href = body.dataset[attr];
    };
    switch (e.key) {
      case "j":
        if (page === "sample") go("next");
        else focusTile(current + 1);
        break;
      case "k":
        if (page === "sample") go("prev");
        else focusTile(current - 1);
        break;
      case "x":
        if (current >= 0) {
          const box = tiles[current].querySelector(".pick");
          if (box) {
            box.checked = !box.checked;
            showCount();
          }
        }
        break;
      case "a": {
        const boxes = tiles.map(function (t) { return t.querySelector(".pick"); }).filter(Boolean);
        const all = boxes.length > 0 && boxes.every(function (b) { return b.checked; });
        boxes.forEach(function (b) { b.checked = !all; });
        showCount();
        break;
      }
      case "o":
      case "Enter":
        if (e.key === "Enter" && (tag === "BUTTON" || tag === "A" || tag === "INPUT")) return;
        if (current >= 0) window.location.href = tiles[current].querySelector("a.open").href;
        else return;
        break;
      case "c":
        decide("confirm");
        break;
      case "r":
        decide("release");
        break;
      case "l":
        decide("relabel");
        break;
      case "n": {
        const note = document.getElementById("note");
        if (note) note.focus();
        break;
      }
      case "?":
        if (helpToggle) helpToggle.click();
        break;
      default:
        return;
    }
    e.preventDefault();
  });
})();
