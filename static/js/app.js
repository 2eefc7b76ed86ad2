// Imagegate's page behaviour, one small static file (no framework, no inline script, so a strict
// Content-Security-Policy holds): the collapsible menu, copy buttons, and confirmations on dangerous forms.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  ready(function () {
    // The menu: on narrow screens the nav collapses behind a button (without JS it simply stays open).
    var toggle = document.querySelector("[data-menu-toggle]");
    var nav = document.getElementById("site-nav");
    if (toggle && nav) {
      toggle.addEventListener("click", function () {
        var open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
        nav.classList.toggle("open", open);
      });
    }

    // Copy buttons: <button data-copy="#element-id">; the text of that element goes to the clipboard.
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.querySelector(button.getAttribute("data-copy"));
        if (!source) { return; }
        var text = source.textContent.trim();
        var done = function () {
          var label = button.textContent;
          button.textContent = "Copied";
          button.classList.add("copied");
          setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 2000);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
        } else {
          selectText(source);
          try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected: the user copies */ }
        }
      });
    });

    // <form data-confirm="Question?">: ask before submitting (replaces inline onsubmit handlers).
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
}());
