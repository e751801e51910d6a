// DOM helpers: find and build elements, show a toast, run an action that toasts its error.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function toast(message, kind = "error") {
  const node = el("div", { class: `toast ${kind}`, role: "status", text: message });
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 6000 : 3000);
}

export async function act(fn) {
  try {
    await fn();
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}
