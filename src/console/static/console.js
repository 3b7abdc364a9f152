// Clientele console: the little a page does in the browser. Every page
// works without it; it only guards dangerous buttons and copies secrets.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A button with data-confirm-input stays disabled until the named input
  // holds exactly the text in data-confirm-value (an erasure's id).
  for (const button of document.querySelectorAll("button[data-confirm-input]")) {
    const input = document.getElementById(button.dataset.confirmInput);
    if (!input) continue;
    const check = () => { button.disabled = input.value.trim() !== button.dataset.confirmValue; };
    input.addEventListener("input", check);
    check();
  }
  // A button with data-copy copies the text of the element it names.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => {
      const source = document.getElementById(button.dataset.copy);
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent.trim()).then(() => { button.textContent = "Copied"; });
      }
    });
  }
});
