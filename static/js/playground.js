// The playground's selects follow the chosen model: its sizes, qualities, n limit and prompt length
// (from the catalog, passed by the page as JSON in #model-limits). No inline script: works under a strict CSP.
(function () {
  "use strict";
  var data = document.getElementById("model-limits");
  var form = document.getElementById("playground-form");
  if (!data || !form) { return; }
  var limits = JSON.parse(data.textContent);
  var model = form.elements.model, size = form.elements.size, quality = form.elements.quality;
  var n = form.elements.n, prompt = form.elements.prompt, help = document.getElementById("prompt-help");

  function fill(select, values, preferred) {
    var current = select.value;
    select.innerHTML = "";
    values.forEach(function (v) {
      var option = document.createElement("option");
      option.value = v; option.textContent = v;
      select.appendChild(option);
    });
    select.value = values.indexOf(current) >= 0 ? current : preferred;
  }

  function apply() {
    var spec = limits[model.value];
    if (!spec) { return; }
    fill(size, spec.sizes, spec.default_size);
    fill(quality, spec.qualities, spec.default_quality);
    n.max = spec.max_n;
    if (Number(n.value) > spec.max_n) { n.value = spec.max_n; }
    prompt.maxLength = spec.max_prompt_chars;
    if (help) {
      help.textContent = "Up to " + spec.max_prompt_chars.toLocaleString("en-US") + " characters for " + model.value + ".";
    }
  }

  model.addEventListener("change", apply);
  apply();
}());
