// Syntax highlighting for code blocks: comments, strings, numbers and keywords of a few
// languages, as <span class="hl-…">. Ours, small on purpose: one regular expression per
// language, no grammar. Everything is escaped; an unknown language is only escaped.

import { esc } from "./format.mjs";

const words = (s) => new Set(s.split(" "));

const C_COMMENT = String.raw`\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)`;
const HASH_COMMENT = String.raw`#[^\n]*`;
const QUOTED = String.raw`"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?`;

const LANGUAGES = {
  python: {
    comment: HASH_COMMENT,
    string: String.raw`[rbfuRBFU]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|${QUOTED})`,
    keywords: words(
      "False None True and as assert async await break class continue def del elif else except " +
        "finally for from global if import in is lambda match case nonlocal not or pass raise return " +
        "try while with yield self",
    ),
  },
  javascript: {
    comment: C_COMMENT,
    string: String.raw`${QUOTED}|\x60(?:\\.|[^\x60\\])*\x60?`,
    keywords: words(
      "async await break case catch class const continue default delete do else export extends " +
        "false finally for from function if import in instanceof interface let new null of return " +
        "static super switch this throw true try type typeof undefined var void while yield",
    ),
  },
  json: { comment: null, string: QUOTED, keywords: words("true false null") },
  shell: {
    comment: String.raw`(?:^|(?<=\s))#[^\n]*`,
    string: QUOTED,
    keywords: words(
      "if then else elif fi for while until do done case esac in function return export local " +
        "echo cd set unset source exit",
    ),
  },
  go: {
    comment: C_COMMENT,
    string: String.raw`${QUOTED}|\x60[^\x60]*\x60?`,
    keywords: words(
      "break case chan const continue default defer else fallthrough for func go goto if import " +
        "interface map package range return select struct switch type var nil true false",
    ),
  },
  rust: {
    comment: C_COMMENT,
    string: String.raw`"(?:\\.|[^"\\])*"?`,
    keywords: words(
      "as async await break const continue crate else enum extern false fn for if impl in let loop " +
        "match mod move mut pub ref return self Self static struct super trait true type unsafe use " +
        "where while",
    ),
  },
  c: {
    comment: C_COMMENT,
    string: QUOTED,
    keywords: words(
      "auto break case char class const continue default do double else enum extern false float for " +
        "if int long namespace new null nullptr private protected public return short signed sizeof " +
        "static struct switch this throw true try typedef union unsigned using void volatile while " +
        "import package final boolean",
    ),
  },
};

const ALIASES = {
  py: "python", python3: "python", js: "javascript", mjs: "javascript", jsx: "javascript",
  ts: "javascript", tsx: "javascript", typescript: "javascript", sh: "shell", bash: "shell",
  zsh: "shell", console: "shell", golang: "go", rs: "rust", h: "c", cpp: "c", "c++": "c",
  cc: "c", java: "c", cs: "c", csharp: "c",
};

const compiled = new Map();

function tokenizer(name) {
  if (!compiled.has(name)) {
    const lang = LANGUAGES[name];
    const comment = lang.comment || "(?!)";
    compiled.set(name, new RegExp(
      `(${comment})|(${lang.string})|(\\b\\d[\\w.]*)|([A-Za-z_$][\\w$]*)`, "gm",
    ));
  }
  return compiled.get(name);
}

/** `code` as HTML: escaped, with its tokens in spans when `lang` is one we know. */
export function highlight(code, lang) {
  const key = (lang || "").toLowerCase();
  const name = LANGUAGES[key] ? key : ALIASES[key];
  if (!name) return esc(code);
  const re = tokenizer(name);
  const keywords = LANGUAGES[name].keywords;
  let out = "";
  let at = 0;
  re.lastIndex = 0;
  for (let m; (m = re.exec(code)); ) {
    if (!m[0]) {
      re.lastIndex++;
      continue;
    }
    const cls = m[1] ? "hl-com" : m[2] ? "hl-str" : m[3] ? "hl-num" : keywords.has(m[4]) ? "hl-kw" : null;
    if (!cls) continue;
    out += esc(code.slice(at, m.index)) + `<span class="${cls}">${esc(m[0])}</span>`;
    at = m.index + m[0].length;
  }
  return out + esc(code.slice(at));
}
