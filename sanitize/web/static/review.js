// Keyboard review for the quarantine grid, the all-samples and similar grids and the sample page.
// The pages work without this file: the forms post normally; here the same forms are sent with
// fetch so the grid and the header's counts update in place, and keys move through the samples.
// On the pictures page, a rectangle drawn on the projection opens its samples as a grid.
(function () {
  "use strict";
  const body = document.body;
  const page = body.dataset.page;
  const form = document.getElementById("decide-form");
  const handForm = document.getElementById("hand-form");
  const flash = document.getElementById("flash");
  const gridPages = ["quarantine", "samples", "similar"];
  const tiles = gridPages.indexOf(page) >= 0 ? Array.from(document.querySelectorAll("#grid .tile")) : [];
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

  // The header's counts from a decision's answer: they are the catalog's, after the decision.
  function updateCounts(out) {
    if (!out.counts) return;
    document.querySelectorAll("[data-count]").forEach(function (el) {
      const key = el.dataset.count;
      el.textContent = key === "quarantined" ? out.quarantined : out.counts[key] || 0;
    });
    const note = document.getElementById("approved-note");
    if (note && out.approved_version) note.textContent = " \u00b7 approved clean version " + out.approved_version;
  }

  async function post(url, data) {
    let resp;
    try {
      resp = await fetch(url, {
        method: "POST",
        body: data,
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (err) {
      say("Could not reach the server: " + err, true);
      return null;
    }
    if (!resp.ok) {
      say(await resp.text(), true);
      return null;
    }
    return resp.json();
  }

  function clearPicks() {
    tiles.forEach(function (t) {
      const box = t.querySelector(".pick");
      if (box) box.checked = false;
    });
    showCount();
  }

  // Send to the quarantine by hand ("by-hand") or undo the latest decision ("undo").
  async function act(kind) {
    if (!handForm) {
      say("Read-only: log in with a reviewer token to send samples to the quarantine or undo.", true);
      return;
    }
    const button = handForm.querySelector('[data-act="' + kind + '"]');
    if (!button) return;
    const ids = targets();
    if (!ids.length) {
      say("Nothing chosen: select samples with x or highlight one with j/k.", true);
      return;
    }
    const data = new URLSearchParams();
    data.append("csrf_token", handForm.elements.csrf_token.value);
    ids.forEach(function (id) { data.append("sample_id", id); });
    data.append("note", document.getElementById("hand-note").value);
    const out = await post(button.getAttribute("formaction"), data);
    if (!out) return;
    out.results.forEach(function (r) { markDecided(r.sample_id, r.status, null); });
    updateCounts(out);
    const changed = out.results.filter(function (r) { return r.changed; }).length;
    let msg = (kind === "undo" ? "undo: " : "sent to the quarantine: ") + changed + " by " + out.reviewer;
    if (changed < out.results.length) msg += ", " + (out.results.length - changed) + " already there";
    if (out.approved_version) msg += " \u00b7 every entry decided: clean version " + out.approved_version + " approved";
    document.getElementById("hand-note").value = "";
    if (page === "sample") {
      // The sample's toolbars depend on its entry: show the page as it now is, with the message.
      sessionStorage.setItem("sanitize-flash", msg);
      window.location.reload();
      return;
    }
    say(msg, false);
    clearPicks();
  }

  function similarOfSelection() {
    const ids = targets();
    if (!ids.length) {
      say("Nothing chosen: select samples with x or highlight one with j/k.", true);
      return;
    }
    const params = new URLSearchParams();
    ids.forEach(function (id) { params.append("sample_id", id); });
    window.location.href = "/runs/" + body.dataset.run + "/similar?" + params.toString();
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
    const out = await post(form.dataset.decideUrl, data);
    if (!out) return;
    const label = action === "relabel" ? select.value : null;
    out.results.forEach(function (r) { markDecided(r.sample_id, r.status, label); });
    const changed = out.results.filter(function (r) { return r.changed; }).length;
    let msg = action + ": " + changed + " decided by " + out.reviewer;
    if (changed < out.results.length) msg += ", " + (out.results.length - changed) + " already so";
    if (out.approved_version) msg += " \u00b7 every entry decided: clean version " + out.approved_version + " approved";
    say(msg, false);
    updateCounts(out);
    const undo = document.getElementById("btn-undo");
    if (undo && changed) undo.hidden = false;  // a decision taken here can be taken back here
    document.getElementById("note").value = "";
    if (page === "quarantine") {
      clearPicks();
      nextPending();
    }
  }

  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (e.submitter && e.submitter.value) decide(e.submitter.value);
    });
  }
  if (handForm) {
    handForm.addEventListener("submit", function (e) {
      e.preventDefault();
      if (e.submitter && e.submitter.dataset.act) act(e.submitter.dataset.act);
    });
  }
  const similarButton = document.getElementById("btn-similar");
  if (similarButton) similarButton.addEventListener("click", similarOfSelection);
  const kept = sessionStorage.getItem("sanitize-flash");
  if (kept) {
    sessionStorage.removeItem("sanitize-flash");
    say(kept, false);
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
      } else if (e.key === "Enter" && (e.target.id === "note" || e.target.id === "hand-note")) {
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
        if (form) decide("confirm");
        else if (!handForm) decide("confirm");
        else return;
        break;
      case "q":
        act("by-hand");
        break;
      case "u":
        act("undo");
        break;
      case "m":
        if (page === "sample") {
          const link = document.getElementById("similar-features");
          if (link) window.location.href = link.href;
        } else if (tiles.length) similarOfSelection();
        else return;
        break;
      case "r":
        if (form || !handForm) decide("release");
        else return;
        break;
      case "l":
        if (form || !handForm) decide("relabel");
        else return;
        break;
      case "n": {
        const note = document.getElementById("note") || document.getElementById("hand-note");
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
  // --- the projection: draw a rectangle, open its samples ------------------------------------
  const chart = document.getElementById("projection-chart");
  if (chart) {
    const ns = "http://www.w3.org/2000/svg";
    const box = chart.dataset.box.split(" ").map(Number);
    const range = chart.dataset.range.split(" ").map(Number);
    let start = null;
    let rect = null;
    const at = function (e) {
      const pt = chart.createSVGPoint();
      pt.x = e.clientX;
      pt.y = e.clientY;
      return pt.matrixTransform(chart.getScreenCTM().inverse());
    };
    const toData = function (p) {
      const fx = Math.min(Math.max((p.x - box[0]) / box[2], 0), 1);
      const fy = Math.min(Math.max((p.y - box[1]) / box[3], 0), 1);
      return [range[0] + fx * (range[1] - range[0]), range[3] - fy * (range[3] - range[2])];
    };
    chart.addEventListener("pointerdown", function (e) {
      e.preventDefault();
      start = at(e);
      rect = document.createElementNS(ns, "rect");
      rect.setAttribute("class", "selection");
      rect.setAttribute("id", "selection-rect");
      chart.appendChild(rect);
    });
    chart.addEventListener("pointermove", function (e) {
      if (!start) return;
      const p = at(e);
      rect.setAttribute("x", Math.min(start.x, p.x));
      rect.setAttribute("y", Math.min(start.y, p.y));
      rect.setAttribute("width", Math.abs(p.x - start.x));
      rect.setAttribute("height", Math.abs(p.y - start.y));
    });
    chart.addEventListener("pointerup", function (e) {
      if (!start) return;
      const a = toData(start);
      const b = toData(at(e));
      start = null;
      if (a[0] === b[0] || a[1] === b[1]) {
        rect.remove();
        return;
      }
      const params = new URLSearchParams({
        x0: Math.min(a[0], b[0]), x1: Math.max(a[0], b[0]),
        y0: Math.min(a[1], b[1]), y1: Math.max(a[1], b[1]),
      });
      window.location.href = "/runs/" + document.getElementById("projection").dataset.run + "/samples?" + params.toString();
    });
  }
})();
