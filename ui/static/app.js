// wharf UI conveniences; every page works without this file.
"use strict";
document.documentElement.classList.add("js");
document.addEventListener("click", function (ev) {
  var b = ev.target.closest("button.copy");
  if (!b || !navigator.clipboard) { return; }
  navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
    var old = b.textContent;
    b.textContent = "Copied";
    setTimeout(function () { b.textContent = old; }, 1500);
  });
});
