// Markdown: a small, safe subset. Everything is escaped; only the tags below
// are produced, and links only to http(s), mailto or same-origin paths.

import { esc } from "./format.mjs";
import { highlight } from "./highlight.mjs";

function safeUrl(url) {
  const u = url.trim();
  if (/^(https?:|mailto:)/i.test(u) || /^\/(?!\/)/.test(u) || u.startsWith("#")) return u;
  return null;
}

function inline(src) {
  const slots = [];
  const keep = (html) => "\u0000" + (slots.push(html) - 1) + "\u0000";
  let s = src.replace(/\u0000/g, "");
  s = s.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, _ticks, code) =>
    keep("<code>" + esc(code) + "</code>"),
  );
  s = s.replace(/\[([^\]\n]+)\]\(([^()\s]+)\)/g, (all, label, url) => {
    const u = safeUrl(url);
    if (!u) return all;
    return keep(`<a href="${esc(u)}" target="_blank" rel="noopener noreferrer">`) + label + keep("</a>");
  });
  s = s.replace(/\bhttps?:\/\/[^\s<>()"'`\u0000]*[^\s<>()"'`.,;:!?\u0000]/g, (u) =>
    keep(`<a href="${esc(u)}" target="_blank" rel="noopener noreferrer">${esc(u)}</a>`),
  );
  s = esc(s);
  s = s.replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>");
  s = s.replace(/(^|[^*\w])\*([^*\s]|[^*\s][^*\n]*?[^*\s])\*(?![*\w])/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^\w])_([^_\s]|[^_\s][^_\n]*?[^_\s])_(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/~~(?=\S)([^\n]*?\S)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => slots[Number(i)]);
}

const FENCE_RE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING_RE = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const HR_RE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE_RE = /^\s{0,3}>/;
const LIST_RE = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP_RE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function startsBlock(line) {
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) || QUOTE_RE.test(line) ||
    LIST_RE.test(line);
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

export function markdown(src) {
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = line.match(FENCE_RE))) {
      const fence = m[1];
      const lang = m[2];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++;
      const label = lang ? `<span class="lang">${esc(lang)}</span>` : "";
      out.push(`<pre class="code">${label}<code>${highlight(body.join("\n"), lang)}</code></pre>`);
    } else if ((m = line.match(HEADING_RE))) {
      const n = m[1].length;
      out.push(`<h${n}>${inline(m[2])}</h${n}>`);
      i++;
    } else if (HR_RE.test(line)) {
      out.push("<hr>");
      i++;
    } else if (QUOTE_RE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE_RE.test(lines[i])) {
        body.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      }
      out.push(`<blockquote>${markdown(body.join("\n"))}</blockquote>`);
    } else if ((m = line.match(LIST_RE))) {
      i = list(lines, i, out);
    } else if (line.includes("|") && i + 1 < lines.length && lines[i + 1].includes("-") &&
               TABLE_SEP_RE.test(lines[i + 1])) {
      const head = splitRow(line);
      const aligns = splitRow(lines[i + 1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "",
      );
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) rows.push(splitRow(lines[i++]));
      const cell = (tag, text, k) =>
        `<${tag}${aligns[k] ? ` class="align-${aligns[k]}"` : ""}>${inline(text || "")}</${tag}>`;
      out.push(
        "<table><thead><tr>" + head.map((c, k) => cell("th", c, k)).join("") + "</tr></thead><tbody>" +
        rows.map((r) => "<tr>" + head.map((_, k) => cell("td", r[k], k)).join("") + "</tr>").join("") +
        "</tbody></table>",
      );
    } else {
      const para = [lines[i++]];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
      out.push(`<p>${para.map((p) => inline(p.trim())).join("<br>")}</p>`);
    }
  }
  return out.join("");
}

function list(lines, i, out) {
  const first = lines[i].match(LIST_RE);
  const base = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  let cur = null;
  while (i < lines.length) {
    const line = lines[i];
    const m = line.match(LIST_RE);
    if (m && m[1].length <= base + 1) {
      if (/\d/.test(m[2]) !== ordered) break;
      cur = [m[3]];
      items.push(cur);
      i++;
    } else if (line.trim() && (line.length - line.trimStart().length >= base + 2 || !startsBlock(line))) {
      cur.push(line.slice(Math.min(base + 2, line.length - line.trimStart().length)));
      i++;
    } else if (!line.trim() && i + 1 < lines.length) {
      const next = lines[i + 1];
      const nm = next.match(LIST_RE);
      const indented = next.trim() && next.length - next.trimStart().length >= base + 2;
      if (!(nm && nm[1].length <= base + 1 && /\d/.test(nm[2]) === ordered) && !indented) break;
      cur.push("");
      i++;
    } else {
      break;
    }
  }
  const start = ordered ? parseInt(first[2], 10) : 1;
  const tag = ordered ? "ol" : "ul";
  const attrs = ordered && start !== 1 ? ` start="${start}"` : "";
  const lis = items.map((item) => {
    const body = item.length === 1 ? inline(item[0]) : markdown(item.join("\n"));
    return `<li>${body}</li>`;
  });
  out.push(`<${tag}${attrs}>${lis.join("")}</${tag}>`);
  return i;
}

// ---------------------------------------------------------------------------
