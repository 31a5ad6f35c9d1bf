// partialface's page: a thin layer over the service's REST routes (/v1/...). Every decision (same or not,
// a name or "unknown", thresholds) is the service's; this file only sends photos and shows the answers.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const KEY = "partialface.apiKey";
  const VIEWS = ["verify", "people", "identify"];
  const REGION_NAMES = { left_eye: "left eye", right_eye: "right eye", nose: "nose", mouth: "mouth", rest: "rest" };

  // ---------------------------------------------------------------------------------------------- helpers
  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.append(c));
    return node;
  }
  const num = (x, digits) => (typeof x === "number" ? x.toFixed(digits === undefined ? 3 : digits) : "–");
  const pct = (x) => (typeof x === "number" ? Math.round(x * 100) + "\u00a0%" : "–");
  const rate = (x) => (typeof x === "number" && x > 0
    ? String(x) + " (1 in " + Math.round(1 / x).toLocaleString("en") + ")" : "–");

  function status(text, running) {
    const line = $("#status");
    line.textContent = text || "";
    line.classList.toggle("busy", Boolean(running && text));
  }

  function showError(id, text) {
    const box = $("#" + id);
    box.textContent = text || "";
    box.hidden = !text;
  }

  /** A request to the service: the parsed JSON, or an Error whose message is the problem's one-line detail. */
  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = $("#api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    } catch (e) {
      throw new Error("The service cannot be reached; is it still running?");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
      const err = new Error(detail + " (HTTP " + response.status + ")");
      err.status = response.status;
      throw err;
    }
    return data;
  }

  /** Run ``work`` while the section says it is busy (aria-busy, disabled buttons, the status line). */
  async function busy(section, doing, work, done) {
    const node = $("#" + section);
    const buttons = node.querySelectorAll("button");
    node.setAttribute("aria-busy", "true");
    buttons.forEach((b) => (b.disabled = true));
    status(doing, true);
    try {
      const result = await work();
      status(done ? done(result) : "");
      return result;
    } catch (e) {
      status("");
      throw e;
    } finally {
      node.removeAttribute("aria-busy");
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  // ---------------------------------------------------------------------------------------------- views
  function show(view) {
    if (!VIEWS.includes(view)) view = "verify";
    if (!document.querySelector(".view[aria-busy=true]")) status("");
    VIEWS.forEach((v) => {
      $("#" + v).hidden = v !== view;
      const tab = $("#tab-" + v);
      if (v === view) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    });
    if (view === "people") refreshPeople();
  }

  async function loadInfo() {
    try {
      const info = await call("GET", "/v1/info");
      const size = info.gallery ? info.gallery.size : 0;
      $("#info").textContent = "model " + info.model + " · " + size + (size === 1 ? " person" : " people") +
        " enrolled · version " + info.version;
    } catch (e) {
      $("#info").textContent = e.status === 503 ? "the service is warming up…" : e.message;
      if (e.status === 503) setTimeout(loadInfo, 2000);
    }
  }

  // ---------------------------------------------------------------------------------------------- photos
  /** Drop targets: a file dropped on a zone goes into its file input (as if chosen). */
  function setUpDrops() {
    document.querySelectorAll("[data-drop]").forEach((zone) => {
      const input = $("#" + zone.dataset.drop);
      ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => {
        e.preventDefault();
        zone.classList.add("over");
      }));
      ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        if (!e.dataTransfer || !e.dataTransfer.files.length) return;
        input.files = e.dataTransfer.files;
        input.dispatchEvent(new Event("change", { bubbles: true }));
      });
      const text = $(".drop-text", zone);
      text.dataset.prompt = text.textContent;
      input.addEventListener("change", () => preview(zone, input));
    });
  }

  const urls = new WeakMap();
  function preview(zone, input) {
    const files = Array.from(input.files || []);
    const text = $(".drop-text", zone);
    text.textContent = files.length ? files.map((f) => f.name).join(", ") : text.dataset.prompt;
    const img = $("img.preview", zone);
    if (img) {
      if (urls.has(img)) URL.revokeObjectURL(urls.get(img));
      if (files.length) {
        const url = URL.createObjectURL(files[0]);
        urls.set(img, url);
        img.src = url;
        img.alt = "photo " + files[0].name;
        img.hidden = false;
        img.onerror = () => { img.hidden = true; };
      } else {
        img.hidden = true;
      }
    }
    const thumbs = $(".thumbs", zone);
    if (thumbs) {
      thumbs.querySelectorAll("img").forEach((t) => URL.revokeObjectURL(t.src));
      thumbs.replaceChildren(...files.slice(0, 8).map((f) => {
        const t = el("img", { alt: "", class: "thumb" });
        t.src = URL.createObjectURL(f);
        t.onerror = () => t.remove();
        return t;
      }));
    }
  }

  // ---------------------------------------------------------------------------------------------- verify
  async function verify(event) {
    event.preventDefault();
    showError("verify-error", "");
    const a = $("#verify-a").files[0], b = $("#verify-b").files[0];
    if (!a || !b) {
      showError("verify-error", "Choose two photos: A and B.");
      return;
    }
    const form = new FormData();
    form.append("a", a);
    form.append("b", b);
    form.append("far", $("#verify-far").value);
    form.append("kind", $("#verify-kind").value);
    form.append("explain", "true");
    $("#verify-result").hidden = true;
    try {
      await busy("verify", "Comparing the two photos…", async () => {
        const res = await call("POST", "/v1/verify", form);
        showVerification(res);
      });
    } catch (e) {
      showError("verify-error", e.message);
    }
  }

  function showVerification(res) {
    const verdict = $("#verify-verdict");
    verdict.textContent = res.same ? "same" : "different";
    verdict.className = "verdict " + (res.same ? "yes" : "no");
    $("#verify-sentence").textContent = res.same
      ? "person: score " + num(res.score) + " ≥ threshold " + num(res.threshold)
      : "people: score " + num(res.score) + " < threshold " + num(res.threshold);
    // the bar: scores are cosine similarities; shown from 0 to 1 (below 0 as empty)
    const clamp = (x) => Math.max(0, Math.min(1, x));
    const bar = $("#verify-bar");
    $(".bar-fill", bar).style.width = clamp(res.score) * 100 + "%";
    $(".bar-fill", bar).className = "bar-fill " + (res.same ? "yes" : "no");
    $(".bar-mark", bar).style.left = clamp(res.threshold) * 100 + "%";
    const facts = [
      ["score", num(res.score)],
      ["threshold", num(res.threshold)],
      ["false accept rate", rate(res.far)],
      ["operating point", res.kind],
      ["model", res.model],
      ["shared visibility", pct(res.shared_visibility)],
    ];
    $("#verify-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, [el("dt", { text: k }),
      el("dd", { text: v })])));
    $("#verify-notes").replaceChildren(...(res.notes || []).map((n) => el("li", { text: n })));
    const faces = res.faces || [];
    const vis = (i, r) => (faces[i] && faces[i].visibility ? pct(faces[i].visibility[r]) : "–");
    const rows = Object.entries(res.regions || {}).map(([r, share]) => {
      const meter = el("span", { class: "share" });
      meter.style.width = Math.round(Math.max(0, Math.min(1, share)) * 100) + "%";
      return el("tr", {}, [
        el("th", { scope: "row", text: REGION_NAMES[r] || r }),
        el("td", {}, [el("span", { class: "share-text", text: pct(share) }), meter]),
        el("td", { text: vis(0, r) }),
        el("td", { text: vis(1, r) }),
      ]);
    });
    $("#verify-regions tbody").replaceChildren(...rows);
    $("#verify-regions").hidden = rows.length === 0;
    const img = $("#verify-explain");
    if (res.explain_png) {
      img.src = "data:image/png;base64," + res.explain_png;
      img.alt = "the explanation: both faces with their regions, and each region's share of the score";
      img.hidden = false;
    } else {
      img.hidden = true;
    }
    $("#verify-result").hidden = false;
  }

  // ---------------------------------------------------------------------------------------------- people
  async function refreshPeople() {
    try {
      const res = await call("GET", "/v1/subjects");
      const people = res.subjects || [];
      $("#people-count").textContent = "Enrolled: " + people.length + (people.length === 1 ? " person" : " people");
      $("#people-empty").hidden = people.length > 0;
      $("#people-table").hidden = people.length === 0;
      $("#people-table tbody").replaceChildren(...people.map((p) => {
        const remove = el("button", { type: "button", class: "secondary", text: "Remove",
          "aria-label": "Remove " + p.name });
        remove.addEventListener("click", () => removePerson(p.name));
        return el("tr", {}, [el("td", { text: p.name }), el("td", { text: String(p.templates) }),
          el("td", {}, [remove])]);
      }));
    } catch (e) {
      showError("people-error", e.message);
    }
  }

  async function enrol(event) {
    event.preventDefault();
    showError("people-error", "");
    const name = $("#enrol-name").value;
    const files = Array.from($("#enrol-photos").files || []);
    if (!name.trim()) {
      showError("people-error", "Name: give the person's name.");
      $("#enrol-name").focus();
      return;
    }
    if (!files.length) {
      showError("people-error", "Photos: choose at least one photo of " + name + ".");
      return;
    }
    const form = new FormData();
    files.forEach((f) => form.append("images", f));
    try {
      await busy("people", "Enrolling " + name + "…",
        () => call("POST", "/v1/subjects/" + encodeURIComponent(name) + "/faces", form),
        (res) => "Enrolled " + res.name + ": " + res.templates + (res.templates === 1 ? " photo" : " photos") + ".");
      $("#enrol-form").reset();
      preview($("[data-drop=enrol-photos]"), $("#enrol-photos"));
      await refreshPeople();
      loadInfo();
    } catch (e) {
      showError("people-error", e.message);
    }
  }

  async function removePerson(name) {
    if (!window.confirm("Remove " + name + " and their photos' templates from the gallery?")) return;
    showError("people-error", "");
    try {
      await busy("people", "Removing " + name + "…", () =>
        call("DELETE", "/v1/subjects/" + encodeURIComponent(name)), () => "Removed " + name + ".");
      await refreshPeople();
      loadInfo();
    } catch (e) {
      showError("people-error", e.message);
    }
  }

  // ---------------------------------------------------------------------------------------------- identify
  async function identify(event) {
    event.preventDefault();
    showError("identify-error", "");
    const file = $("#identify-photo").files[0];
    if (!file) {
      showError("identify-error", "Choose a photo.");
      return;
    }
    const form = new FormData();
    form.append("image", file);
    form.append("fpir", $("#identify-fpir").value);
    form.append("all_faces", "true");
    form.append("top_k", "3");
    $("#identify-result").hidden = true;
    try {
      await busy("identify", "Looking for faces and the people they belong to…", async () => {
        const res = await call("POST", "/v1/identify", form);
        await showIdentification(file, res);
      });
    } catch (e) {
      showError("identify-error", e.message);
    }
  }

  function loadImage(file) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      const url = URL.createObjectURL(file);
      img.onload = () => resolve({ img, url });
      img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("the browser cannot show this photo")); };
      img.src = url;
    });
  }

  async function showIdentification(file, res) {
    const faces = res.faces || [];
    const list = faces.map((f, i) => {
      const known = f.name !== null && f.name !== undefined;
      const label = known ? f.name : "unknown";
      const best = (f.candidates || [])[0];
      const why = known
        ? "score " + num(f.score) + " ≥ threshold " + num(f.threshold)
        : "best score " + num(f.score) + (best ? " (" + best[0] + ")" : "") + " < threshold " + num(f.threshold);
      return el("li", { class: known ? "known" : "unknown" }, [
        el("span", { class: "face-no", text: "face " + (i + 1) + ": " }),
        el("strong", { class: "face-name", text: label }),
        el("span", { text: " — " + why }),
        el("span", { class: "why", text: f.why || "" }),
      ]);
    });
    $("#identify-faces").replaceChildren(...list);
    $("#identify-notes").replaceChildren(...(res.notes || []).map((n) => el("li", { text: n })));
    const canvas = $("#identify-canvas");
    try {
      const { img, url } = await loadImage(file);
      const scale = Math.max(1, 560 / img.naturalWidth);  // small photos drawn larger, for readable labels
      canvas.width = Math.round(img.naturalWidth * scale);
      canvas.height = Math.round(img.naturalHeight * scale);
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(url);
      const size = Math.max(12, Math.round(Math.max(canvas.width, canvas.height) / 28));
      const line = Math.max(2, Math.round(size / 6));
      ctx.font = "bold " + size + "px system-ui, sans-serif";
      ctx.textBaseline = "top";
      faces.forEach((f, i) => {
        const box = f.face && f.face.box;
        if (!box) return;
        const [x1, y1, x2, y2] = box.map((v) => v * scale);
        const known = f.name !== null && f.name !== undefined;
        const colour = known ? "#1b7f3b" : "#c0392b";
        ctx.lineWidth = line;
        ctx.strokeStyle = colour;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
        const text = (i + 1) + " " + (known ? f.name : "unknown") + " " + num(f.score, 2);
        const w = ctx.measureText(text).width + size * 0.6, h = size * 1.4;
        const tx = Math.max(0, Math.min(x1 - line / 2, canvas.width - w));
        const ty = y1 - h >= 0 ? y1 - h : Math.min(y2, canvas.height - h);
        ctx.fillStyle = colour;
        ctx.fillRect(tx, ty, w, h);
        ctx.fillStyle = "#ffffff";
        ctx.fillText(text, tx + size * 0.3, ty + size * 0.2);
      });
      canvas.setAttribute("aria-label", "the photo with " + faces.length + (faces.length === 1 ? " face" : " faces") +
        " boxed: " + faces.map((f) => (f.name === null || f.name === undefined ? "unknown" : f.name)).join(", "));
      canvas.hidden = false;
    } catch (e) {
      canvas.hidden = true;
    }
    $("#identify-result").hidden = false;
  }

  // ---------------------------------------------------------------------------------------------- start
  function start() {
    const keyInput = $("#api-key");
    try {
      keyInput.value = sessionStorage.getItem(KEY) || "";
    } catch (e) { /* storage off: the key lives in the field only */ }
    keyInput.addEventListener("input", () => {
      try {
        if (keyInput.value) sessionStorage.setItem(KEY, keyInput.value);
        else sessionStorage.removeItem(KEY);
      } catch (e) { /* storage off */ }
    });
    setUpDrops();
    $("#verify-form").addEventListener("submit", verify);
    $("#enrol-form").addEventListener("submit", enrol);
    $("#identify-form").addEventListener("submit", identify);
    window.addEventListener("hashchange", () => show(location.hash.slice(1)));
    show(location.hash.slice(1));
    loadInfo();
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
