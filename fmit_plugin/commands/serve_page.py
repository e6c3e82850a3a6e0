"""
The web page `allennlp serve` shows at `/`: one self-contained HTML file (inline CSS and script, no
CDN, no font, no network beyond its own server), drawing predictions as `--render-dir` pictures do:
the image with its grounded boxes labelled and coloured by the type predicted for their words, the
tweet with each entity on its type's colour with its confidence, and the raw JSON answer.
"""
import html
import json

from fmit_plugin.visualization.prediction_picture import NO_ENTITY_COLOUR, TYPE_COLOURS, type_colour


def _css(colour: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*colour)


def page_html(labels: list[str]) -> str:
    """The page, with the colours of the four standard types and of the model's own `labels` (the
    palette of `fmit_plugin.visualization.prediction_picture`, so page and pictures agree)."""
    types = list(TYPE_COLOURS) + sorted(set(labels) - set(TYPE_COLOURS))
    palette = {name: _css(type_colour(name)) for name in types}
    legend = "".join(
        f'<span class="swatch" style="background:{colour}"></span>{html.escape(name)} '
        for name, colour in palette.items()
    )
    return (
        _PAGE.replace("__PALETTE__", json.dumps(palette))
        .replace("__NO_ENTITY__", json.dumps(_css(NO_ENTITY_COLOUR)))
        .replace("__LEGEND__", legend)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fmit-plugin: tag a tweet</title>
<style>
  body { font-family: sans-serif; margin: 1.5em; color: #141414; max-width: 60em; }
  textarea { width: 100%; height: 4em; font-size: 1em; box-sizing: border-box; }
  #drop { border: 2px dashed #999; padding: 1em; margin: .6em 0; text-align: center; color: #555; }
  #drop.over { border-color: #1f77b4; background: #eef5fb; }
  #result { display: flex; gap: 1.5em; flex-wrap: wrap; margin-top: 1em; }
  #tweet-out { font-size: 15px; max-width: 30em; }
  /* A word and, under it, its entity's "TYPE confidence", as in the --render-dir pictures. */
  .word { display: inline-block; vertical-align: top; margin: 0 4px 8px 0; }
  .word .text { padding: 1px 2px; }
  .entity .text { color: #fff; }
  .entity .label { display: block; font-size: 11px; font-weight: bold; white-space: nowrap; }
  .swatch { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 8px; vertical-align: middle; }
  pre { background: #f4f4f4; padding: .8em; overflow: auto; max-height: 24em; font-size: 12px; }
  #error { color: #b00; white-space: pre-wrap; }
  #warnings { color: #a60; }
  canvas { border: 1px solid #ddd; }
</style>
</head>
<body>
<h1>fmit-plugin: tag a tweet</h1>
<form id="form">
  <label for="tweet">Tweet</label>
  <textarea id="tweet" name="sentence" placeholder="RT @user : Obama meets Merkel in Berlin"></textarea>
  <div id="drop">Drop an image here, or <input id="image" type="file" accept="image/*"></div>
  <button id="submit" type="submit">Tag</button> <span id="status"></span>
</form>
<div>__LEGEND__</div>
<div id="error" role="alert"></div>
<div id="warnings"></div>
<div id="result">
  <canvas id="picture" width="0" height="0"></canvas>
  <div id="tweet-out"></div>
</div>
<h3>Answer (JSON)</h3>
<pre id="json"></pre>
<script>
"use strict";
const PALETTE = __PALETTE__;
const NO_ENTITY = __NO_ENTITY__;
const PANEL = 320;  // the image's longer side, as in the --render-dir pictures
let chosen = null;

function colourOf(type) { return type === null ? NO_ENTITY : (PALETTE[type] || NO_ENTITY); }

const drop = document.getElementById("drop");
const fileInput = document.getElementById("image");
fileInput.addEventListener("change", () => { chosen = fileInput.files[0] || null; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files.length) { chosen = event.dataTransfer.files[0]; drop.firstChild.textContent =
    "Image: " + chosen.name + " (or choose another) "; }
});

function showTweet(answer) {
  const out = document.getElementById("tweet-out");
  out.textContent = "";
  const owner = {};
  for (const entity of answer.entities) { for (let i = entity.start; i < entity.end; i++) owner[i] = entity; }
  answer.tokens.forEach((token, index) => {
    const entity = owner[index];
    const span = document.createElement("span");
    span.className = "word";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = token;
    span.appendChild(text);
    if (entity) {
      span.classList.add("entity");
      span.dataset.type = entity.type;
      text.style.background = colourOf(entity.type);
      if (index === entity.start) {
        const label = document.createElement("span");
        label.className = "label";
        label.style.color = colourOf(entity.type);
        label.textContent = entity.type + " " + entity.confidence.toFixed(2);
        span.appendChild(label);
      }
    }
    out.appendChild(span);
  });
}

function entityAt(entities, start, end) {
  return entities.find((e) => e.start === start && e.end === end) || null;
}

function showPicture(answer, bitmap) {
  const canvas = document.getElementById("picture");
  if (!bitmap) { canvas.width = 0; canvas.height = 0; return; }
  const scale = PANEL / Math.max(bitmap.width, bitmap.height);
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = scale < 2;
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  context.font = "11px sans-serif";
  canvas.dataset.boxes = "0";
  for (const object of answer.objects || []) {
    if (!object.box || object.label === "whole image") continue;
    const [left, top, right, bottom] = object.box.map((v) => v * scale);
    if (right - left >= canvas.width - 1 && bottom - top >= canvas.height - 1) continue;
    const whole = object.start === 0 && object.end === answer.tokens.length;
    const entity = whole ? null : entityAt(answer.entities, object.start, object.end);
    const colour = colourOf(entity ? entity.type : null);
    context.strokeStyle = colour; context.lineWidth = 2;
    context.strokeRect(left, top, right - left - 1, bottom - top - 1);
    const label = String(object.label || "").slice(0, 28);
    const width = context.measureText(label).width + 4, height = 15;
    const y = top - height >= 0 ? top - height : top;
    const x = Math.min(Math.max(0, left), canvas.width - width);
    context.fillStyle = colour; context.fillRect(x, y, width, height);
    context.fillStyle = "#fff"; context.fillText(label, x + 2, y + 11);
    canvas.dataset.boxes = String(Number(canvas.dataset.boxes) + 1);
  }
}

document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = document.getElementById("status");
  const error = document.getElementById("error");
  error.textContent = ""; status.textContent = "tagging...";
  const form = new FormData();
  form.append("sentence", document.getElementById("tweet").value);
  if (chosen) form.append("image", chosen, chosen.name);
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    const answer = await response.json();
    document.getElementById("json").textContent = JSON.stringify(answer, null, 2);
    if (!response.ok) {
      error.textContent = "Error " + response.status + (answer.field ? " (" + answer.field + ")" : "") + ": " +
        answer.error;
      status.textContent = "";
      return;
    }
    document.getElementById("warnings").textContent = (answer.warnings || []).join("\\n");
    showTweet(answer);
    let bitmap = null;
    if (chosen) { try { bitmap = await createImageBitmap(chosen); } catch (ignored) { bitmap = null; } }
    showPicture(answer, bitmap);
    status.textContent = answer.entities.length + " entities";
    document.body.dataset.done = "1";
  } catch (failure) {
    error.textContent = "The server did not answer: " + failure;
    status.textContent = "";
  }
});
</script>
</body>
</html>
"""
