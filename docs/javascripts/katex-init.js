// Render the formulas that pymdownx.arithmatex (generic mode) leaves in the page:
// <span class="arithmatex">\(...\)</span> inline, <div class="arithmatex">\[...\]</div> displayed.
// KaTeX is vendored under javascripts/katex/ (MIT, see its LICENSE): no CDN, works offline.
(function () {
  function render(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katex) return;
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      if (/^\\[(\[]/.test(tex)) tex = tex.slice(2, -2);
      katex.render(tex, el, { displayMode: display, throwOnError: false, strict: "warn" });
      el.dataset.katex = "1";
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { render(document.body); });  // mkdocs-material, instant loading too
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document.body); });
  }
})();
