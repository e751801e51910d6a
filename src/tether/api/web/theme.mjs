// Light or dark: the system's choice until the toggle picks one, which this browser
// remembers (localStorage) and sets as html[data-theme] (style.css reads it).

import { $ } from "./dom.mjs";

const THEME_STORE = "tether.theme";
const systemDark = () => window.matchMedia("(prefers-color-scheme: dark)").matches;

function effective() {
  return document.documentElement.dataset.theme || (systemDark() ? "dark" : "light");
}

function show() {
  const dark = effective() === "dark";
  const button = $("theme-toggle");
  button.setAttribute("aria-pressed", String(dark));
  button.textContent = dark ? "light" : "dark";
  button.title = dark ? "Light mode" : "Dark mode";
}

/** Apply the remembered choice (before the page is drawn) and wire the toggle. */
export function wireTheme() {
  const saved = localStorage.getItem(THEME_STORE);
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
  show();
  $("theme-toggle").addEventListener("click", () => {
    const next = effective() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem(THEME_STORE, next);
    show();
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", show);
}
