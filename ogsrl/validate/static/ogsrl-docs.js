/* ogsrl: the two interactions of the GE Data Docs without jQuery/Bootstrap JS (offline): "Show more info…"
   collapses and the "Failed Only" validation filter. */
(function () {
  function each(sel, fn) { Array.prototype.forEach.call(document.querySelectorAll(sel), fn); }
  function setShown(el, shown) { if (el) { el.style.display = shown ? "" : "none"; } }
  function filter(show) {
    each(".hide-succeeded-validation-target-child", function (el) { setShown(el.parentElement, show); });
    each(".hide-succeeded-validation-target", function (el) { setShown(el, show); });
    each(".hide-succeeded-validations-column-section-target-child", function (el) {
      var section = el.parentElement && el.parentElement.parentElement;
      setShown(section, show);
      if (section && section.id) {
        each('a[href$="' + section.id + '"]', function (a) { setShown(a, show); });
      }
    });
  }
  window.showAllValidations = function () { filter(true); };
  window.hideSucceededValidations = function () { filter(false); };
  document.addEventListener("click", function (ev) {
    var a = ev.target.closest ? ev.target.closest('[data-toggle="collapse"]') : null;
    if (!a) { return; }
    var id = (a.getAttribute("href") || a.getAttribute("data-target") || "").replace(/^#/, "");
    var target = id && document.getElementById(id);
    if (target) { ev.preventDefault(); target.classList.toggle("show"); }
  });
})();
