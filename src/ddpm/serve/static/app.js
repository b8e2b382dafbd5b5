// ddpm serve: the page's behaviour. Plain JS, no libraries, nothing loaded from elsewhere.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { runs: [], run: null, real: null, painted: false, control: null };
window.ddpmEvents = []; // what the page has received, in order (read by the browser tests)

async function api(url, options) {
  const response = await fetch(url, options);
  const json = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((json && json.error) || `HTTP ${response.status}`);
  return json;
}

function option(select, value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  select.appendChild(item);
}

async function loadRuns() {
  try {
    state.runs = (await api("/api/runs")).runs;
  } catch (err) {
    $("page-error").textContent = err.message;
    return;
  }
  for (const run of state.runs) option($("run"), run.id, run.name + (run.error ? " (unreadable)" : ""));
  if (state.runs.length) chooseRun(state.runs[0].id);
}

function showInfo(run) {
  const info = $("run-info");
  info.replaceChildren();
  const quality = Object.entries(run.quality || {}).filter(([k]) => k !== "step")
    .map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join(", ");
  const rows = run.error ? [["error", run.error]] : [
    ["data", run.data], ["preset", run.preset], ["network", run.network],
    ["steps trained", run.steps_trained], ["image shape", (run.sample_shape || []).join("×")],
    ["classes", run.num_classes ?? "unconditional"], ["own sampler", `${run.sampler}, ${run.steps} steps`],
    ["quality", quality || "not evaluated (ddpm eval, or run.eval_every)"],
  ];
  if (run.control) rows.push(["control", describeControl(run.control)]);
  for (const [key, value] of rows) {
    const dt = document.createElement("dt"); dt.textContent = key;
    const dd = document.createElement("dd"); dd.textContent = value;
    info.append(dt, dd);
  }
}

function chooseRun(id) {
  const run = state.runs.find((r) => r.id === id);
  state.run = run;
  $("run").value = id;
  showInfo(run);
  if (run.error) return;
  $("sampler").replaceChildren();
  for (const name of run.samplers) option($("sampler"), name, name + (name === run.sampler ? " (run's own)" : ""));
  $("sampler").value = run.sampler;
  $("steps").value = run.steps;
  $("label").replaceChildren();
  option($("label"), "", "every class");
  for (let k = 0; k < (run.num_classes || 0); k++) option($("label"), String(k), String(k));
  for (const el of document.querySelectorAll(".conditional")) el.hidden = !run.num_classes;
  showTraining(run);
  showRealImages(run);
  clearMask();
  showControl(run);
}

function showTraining(run) {
  $("curves").hidden = !run.has_curves;
  $("no-curves").hidden = run.has_curves;
  if (run.has_curves) $("curves").src = `/api/runs/${run.id}/curves.png`;
  const poster = $("poster");
  poster.replaceChildren();
  if (!run.poster) {
    poster.textContent = "No poster in this run (ddpm report RUN --out RUN/poster.png).";
  } else if (run.poster === "png") {
    const img = document.createElement("img");
    img.src = `/api/runs/${run.id}/poster`; img.alt = "poster"; img.id = "poster-image"; img.className = "poster";
    img.width = 480;
    poster.appendChild(img);
  } else {
    const link = document.createElement("a");
    link.href = `/api/runs/${run.id}/poster`; link.textContent = "poster (PDF)";
    poster.appendChild(link);
  }
}

function showRealImages(run) {
  const box = $("real-images");
  box.replaceChildren();
  for (let k = 0; k < 8; k++) {
    const img = document.createElement("img");
    img.src = `/api/runs/${run.id}/real/${k}.png`;
    img.alt = `real image ${k}`;
    img.dataset.index = k;
    img.addEventListener("error", () => img.remove());
    img.addEventListener("click", () => pickReal(img));
    box.appendChild(img);
  }
}

function drawPicked(source) {
  const ctx = $("image-canvas").getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, 256, 256);
  ctx.drawImage(source, 0, 0, 256, 256);
}

function pickReal(img) {
  state.real = Number(img.dataset.index);
  $("upload").value = "";
  for (const other of document.querySelectorAll("#real-images img")) other.classList.toggle("chosen", other === img);
  drawPicked(img);
}

function pickUpload() {
  const file = $("upload").files[0];
  if (!file) return;
  state.real = null;
  for (const other of document.querySelectorAll("#real-images img")) other.classList.remove("chosen");
  const img = new Image();
  img.onload = () => drawPicked(img);
  img.src = URL.createObjectURL(file);
}

function clearMask() {
  $("mask-canvas").getContext("2d").clearRect(0, 0, 256, 256);
  state.painted = false;
}

function setUpPainter() {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  let down = false;
  const paint = (event) => {
    if (!down) return;
    const box = canvas.getBoundingClientRect();
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(event.clientX - box.left, event.clientY - box.top, Number($("brush").value) / 2, 0, 2 * Math.PI);
    ctx.fill();
    state.painted = true;
  };
  canvas.addEventListener("pointerdown", (e) => { down = true; paint(e); });
  canvas.addEventListener("pointermove", paint);
  window.addEventListener("pointerup", () => { down = false; });
  $("clear-mask").addEventListener("click", clearMask);
}

// Follow a job's Server-Sent Events; `ui` names the page's elements for it. Resolves when it ends.
function follow(job, ui) {
  return new Promise((resolve) => {
    const source = new EventSource(`/api/jobs/${job}/events`);
    const log = (type) => window.ddpmEvents.push({ job, type, at: performance.now() });
    const end = () => { source.close(); resolve(); };
    const on = (type, handle) => source.addEventListener(type, (e) => { log(type); handle(JSON.parse(e.data)); });
    on("queued", (d) => { $(ui.status).textContent = d.position > 0 ? `queued: position ${d.position}` : "running"; });
    on("progress", (d) => { $(ui.bar).value = d.step / d.total; $(ui.status).textContent = `step ${d.step}/${d.total}`; });
    on("control", (d) => {
      if (!ui.control) return;
      $(ui.control).src = d.image;
      $(ui.controlFigure).hidden = false;
    });
    on("frame", (d) => {
      $(ui.frame).src = d.x_t;
      if (ui.x0 && d.x0) $(ui.x0).src = d.x0;
      if (ui.step) $(ui.step).textContent = `step ${d.step}/${d.total}, t = ${d.t}`;
    });
    on("done", (d) => {
      const url = `/api/jobs/${job}/result.png`;
      $(ui.result).src = url;
      $(ui.download).href = url;
      $(ui.download).hidden = false;
      $(ui.bar).value = 1;
      $(ui.status).textContent = `done: ${d.count} images`;
      end();
    });
    on("failed", (d) => { $(ui.error).textContent = d.message; $(ui.status).textContent = "failed"; end(); });
    on("cancelled", () => { $(ui.status).textContent = "cancelled"; end(); });
  });
}

async function submit(url, options, ui) {
  $(ui.error).textContent = "";
  $(ui.download).hidden = true;
  $(ui.bar).value = 0;
  $(ui.button).disabled = true;
  try {
    const { job, position, note } = await api(url, options);
    if (ui.note && note) $(ui.note).textContent = note;
    $(ui.status).textContent = position > 1 ? `queued: position ${position}` : "starting";
    await follow(job, ui);
  } catch (err) {
    $(ui.error).textContent = err.message;
    $(ui.status).textContent = "";
  } finally {
    $(ui.button).disabled = false;
  }
}

const sampleUi = { status: "sample-status", bar: "sample-progress", error: "sample-error", frame: "frame-xt",
  x0: "frame-x0", step: "frame-step", result: "sample-result", download: "sample-download", button: "sample-button",
  control: "sample-control", controlFigure: "control-figure", note: "control-note" };
const inpaintUi = { status: "inpaint-status", bar: "inpaint-progress", error: "inpaint-error", frame: "inpaint-frame",
  result: "inpaint-result", download: "inpaint-download", button: "inpaint-button" };

async function sample(event) {
  event.preventDefault();
  const label = $("label").value;
  const body = {
    run: state.run.id, sampler: $("sampler").value, steps: Number($("steps").value), seed: Number($("seed").value),
    n: Number($("n").value), label: label === "" ? null : Number(label), guidance: Number($("guidance").value || 1),
  };
  $("control-figure").hidden = true;
  const form = await controlForm(body); // a control run with a control image
  if (form) return submit("/api/sample/control", { method: "POST", body: form }, sampleUi);
  return submit("/api/sample", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }, sampleUi);
}

async function inpaint(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("run", state.run.id);
  const file = $("upload").files[0];
  if (file) form.append("image", file);
  else if (state.real !== null) form.append("real", String(state.real));
  const mask = await new Promise((resolve) => $("mask-canvas").toBlob(resolve, "image/png"));
  form.append("mask", mask, "mask.png");
  for (const [key, id] of [["n", "inpaint-n"], ["steps", "inpaint-steps"], ["resamples", "inpaint-resamples"],
    ["seed", "seed"]]) form.append(key, $(id).value);
  if ($("label").value !== "") form.append("label", $("label").value);
  submit("/api/inpaint", { method: "POST", body: form }, inpaintUi);
}

document.addEventListener("DOMContentLoaded", () => {
  $("run").addEventListener("change", () => chooseRun($("run").value));
  $("sample-form").addEventListener("submit", sample);
  $("inpaint-form").addEventListener("submit", inpaint);
  $("upload").addEventListener("change", pickUpload);
  setUpPainter();
  setUpControl();
  loadRuns();
});
