// ddpm serve: a control run's control image (a ControlNet, Zhang, Rao & Agrawala 2023, or the concat baseline):
// the control of a real test image, an upload, or a drawing (a white pen on black), and a ControlNet's scale.
// Uses app.js's $, state and api; app.js calls showControl, controlForm and setUpControl.
"use strict";
const CONTROL_KINDS = { canny: "Canny edges", mask: "foreground mask", lowres: "low-resolution draft",
  gray: "grayscale", folder: "users' own control images" };

function describeControl(control) {
  const kind = CONTROL_KINDS[control.kind] || control.kind;
  return control.mode === "concat" ? `concat run, ${kind}` : `ControlNet, ${kind}, over base ${control.base}`;
}

function noControlText(run) {
  return run.control.scale
    ? `No control image: Sample draws with the control dropped, which is the frozen base ${run.control.base} alone (as ddpm sample without --control).`
    : "No control image: Sample draws with the blank control this concat run learned (as ddpm sample without --control).";
}

function showControl(run) {
  const control = run.control;
  $("control-panel").hidden = !control;
  $("control-figure").hidden = true;
  state.control = null;
  if (!control) return;
  const [, height, width] = run.sample_shape;
  $("control-about").textContent = `This run takes a control image (${describeControl(control)}): pick the control ` +
    `of a real image, upload one (${width}×${height}) or draw one.`;
  $("control-scale-label").hidden = !control.scale;
  $("control-pen").value = Math.max(2, Math.min(48, Math.round(256 / width))); // about one pixel of the run
  const box = $("control-reals");
  box.replaceChildren();
  for (let k = 0; k < 8; k++) {
    const img = document.createElement("img");
    img.src = `/api/runs/${run.id}/control/${k}.png`;
    img.alt = `control of real image ${k}`;
    img.dataset.index = k;
    img.addEventListener("error", () => img.remove());
    img.addEventListener("click", () => pickRealControl(img));
    box.appendChild(img);
  }
  clearControl();
}

function setControl(control, text) {
  state.control = control;
  $("control-note").textContent = control ? text : noControlText(state.run);
  for (const img of document.querySelectorAll("#control-reals img")) {
    img.classList.toggle("chosen", Boolean(control) && control.source === "real" && control.index === Number(img.dataset.index));
  }
}

function paintControl(source) {
  const ctx = $("control-canvas").getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, 256, 256);
  if (source) ctx.drawImage(source, 0, 0, 256, 256);
}

function clearControl() {
  $("control-upload").value = "";
  paintControl(null);
  setControl(null);
}

function pickRealControl(img) {
  const index = Number(img.dataset.index);
  $("control-upload").value = "";
  paintControl(img);
  setControl({ source: "real", index }, `Control: the ${CONTROL_KINDS[state.run.control.kind]} of real test image ${index}.`);
}

function pickControlUpload() {
  const file = $("control-upload").files[0];
  if (!file) return;
  const img = new Image();
  img.onload = () => paintControl(img);
  img.src = URL.createObjectURL(file);
  setControl({ source: "upload", file }, `Control: ${file.name} (uploaded; it must be the run's size).`);
}

function setUpControl() {
  const canvas = $("control-canvas");
  const ctx = canvas.getContext("2d");
  let last = null;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  };
  const stroke = (event) => {
    if (!last) return;
    const next = at(event);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Number($("control-pen").value);
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...next);
    ctx.stroke();
    last = next;
    if (!state.control || state.control.source !== "drawing") {
      $("control-upload").value = "";
      setControl({ source: "drawing" }, "Control: your drawing, scaled to the run's size when sent.");
    }
  };
  canvas.addEventListener("pointerdown", (e) => { last = at(e); stroke(e); });
  canvas.addEventListener("pointermove", stroke);
  window.addEventListener("pointerup", () => { last = null; });
  $("control-clear").addEventListener("click", clearControl);
  $("control-upload").addEventListener("change", pickControlUpload);
  $("control-scale").addEventListener("input", () => { $("control-scale-value").textContent = $("control-scale").value; });
}

// The drawing at the run's own size: the server refuses other sizes, as ddpm sample --control does.
function drawingBlob() {
  const [, height, width] = state.run.sample_shape;
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage($("control-canvas"), 0, 0, width, height);
  return new Promise((resolve) => small.toBlob(resolve, "image/png"));
}

// The sampling form of a control run that has a control image (for /api/sample/control), else null.
async function controlForm(fields) {
  if (!state.run.control || !state.control) return null;
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) if (value !== null) form.append(key, String(value));
  if (state.run.control.scale) form.append("control_scale", $("control-scale").value);
  const control = state.control;
  if (control.source === "real") form.append("control_real", String(control.index));
  else if (control.source === "upload") form.append("control", control.file);
  else form.append("control", await drawingBlob(), "drawing.png");
  return form;
}
