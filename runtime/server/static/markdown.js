// markdown.js — a small, safe Markdown renderer for chat replies.
// Safety first: the text is HTML-escaped before any markup is added, links are only
// http(s)/mailto, and nothing from the text ever becomes an attribute other than an
// escaped href. Supports fenced code blocks, inline code, headings, bold/italic/strike,
// lists (nested by indent), block quotes, tables, rules and links.
"use strict";

const Markdown = (() => {
  const escapeHtml = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");

  // emphasis on escaped text: a delimiter opens before a non-space and closes after one, so that
  // "2 * 3 * 4", "*.tmp and *.log" and "*args" stay as written; bold may hold italics
  function emphasis(text) {
    return text.replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^\w_])__(?=\S)([^_\n]*?\S)__(?![\w_])/g, "$1<strong>$2</strong>")
      .replace(/(^|[^*\w])\*(?=[^\s*])([^*\n]*?[^\s*])\*(?![*\w])/g, "$1<em>$2</em>")
      .replace(/(^|[^\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])/g, "$1<em>$2</em>")
      .replace(/~~(?=\S)([^~\n]*?\S)~~/g, "<del>$1</del>");
  }

  // inline markup on already-escaped text: code spans and links are cut out first (a URL's
  // underscores are no emphasis), backslash escapes kept as the characters they escape
  function inline(text) {
    const kept = [];
    const keep = (html) => { kept.push(html); return `\u0000${kept.length - 1}\u0000`; };
    const link = (href, label) => keep(`<a href="${href}" target="_blank" rel="noopener noreferrer">${label}</a>`);
    text = text.replace(/`([^`\n]+)`/g, (_, c) => keep(`<code>${c}</code>`));
    text = text.replace(/\\([\\`*_{}\[\]()#+\-.!|~])/g, (_, c) => keep(c));
    // a destination may hold balanced parentheses (Wikipedia's)
    text = text.replace(/\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)(?:[^\s()]|\([^\s()]*\))+)\)/g,
      (_, label, href) => link(href, emphasis(label)));
    text = text.replace(/(^|[\s(])((?:https?:\/\/)[^\s<)]+[^\s<).,;:!?'"])/g, (_, pre, href) => pre + link(href, href));
    text = emphasis(text);
    for (let n = 0; n < 3 && text.includes("\u0000"); n++)  // (a kept link's label may hold kept code)
      text = text.replace(/\u0000(\d+)\u0000/g, (_, i) => kept[+i]);
    return text;
  }

  const isTableSep = (line) => /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/.test(line) && line.includes("-");
  const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());

  function list(lines, start) {
    // a run of list items; deeper indents become nested lists
    const first = lines[start].match(/^(\s*)([-*+]|\d+[.)])\s+/);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    let html = ordered ? `<ol start="${parseInt(first[2], 10)}">` : "<ul>";
    let i = start;
    while (i < lines.length) {
      const m = lines[i].match(/^(\s*)([-*+]|\d+[.)])\s+(.*)$/);
      if (!m || m[1].length < indent) break;
      if (m[1].length > indent) {
        const [sub, next] = list(lines, i);
        html = html.replace(/<\/li>$/, sub + "</li>");
        i = next;
        continue;
      }
      if (/\d/.test(m[2]) !== ordered) break;
      let body = m[3], blocks = "";
      i++;
      // the item's indented lines: more of its text, or a fenced code block (its lines back to
      // the fence's indent), after which text is a paragraph of its own
      while (i < lines.length && lines[i].trim() && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i])
             && /^\s{2,}/.test(lines[i])) {
        const f = lines[i].match(/^(\s*)(`{3,}|~{3,})/);
        if (f) {
          const pad = f[1].length, block = [];
          block.push(lines[i++].slice(pad));
          while (i < lines.length) {
            const t = lines[i++];
            block.push(t.slice(Math.min(pad, t.length - t.trimStart().length)));
            if (t.trim() === f[2] || (t.trim().startsWith(f[2]) && /^[`~]+$/.test(t.trim()))) break;
          }
          blocks += render(unescapeForNesting(block.join("\n")));
          continue;
        }
        if (blocks) blocks += `<p>${inline(lines[i].trim())}</p>`;
        else body += " " + lines[i].trim();
        i++;
      }
      const task = body.match(/^\[( |x)\]\s+(.*)$/i);
      html += task ? `<li class="task"><input type="checkbox" disabled${task[1] !== " " ? " checked" : ""}> ${inline(task[2])}${blocks}</li>`
                   : `<li>${inline(body)}${blocks}</li>`;
    }
    return [html + (ordered ? "</ol>" : "</ul>"), i];
  }

  function render(src) {
    const lines = escapeHtml(src.replace(/\r\n?/g, "\n")).split("\n");
    const out = [];
    let para = [];
    const flush = () => {
      if (para.length) out.push(`<p>${inline(para.join("\n")).replace(/\n/g, "<br>")}</p>`);
      para = [];
    };
    for (let i = 0; i < lines.length;) {
      const line = lines[i];
      const fence = line.match(/^\s*(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$/);
      if (fence) {
        flush();
        const code = [];
        i++;
        const closes = (l) => { const t = l.trim(); return t.length >= fence[1].length && /^[`~]+$/.test(t) && t[0] === fence[1][0]; };
        while (i < lines.length && !closes(lines[i])) code.push(lines[i++]);
        const closed = i < lines.length;
        i++;
        const lang = fence[2] || "text";
        out.push(`<div class="code"><div class="code-head"><span>${lang}</span>` +
                 `<button type="button" class="copy">Copy</button></div>` +
                 `<pre><code class="lang-${lang}">${code.join("\n")}${closed ? "" : ""}</code></pre></div>`);
        continue;
      }
      const h = line.match(/^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/);  // a closing run of # after a space ("C#" stays)
      if (h) { flush(); out.push(`<h${h[1].length}>${inline(h[2])}</h${h[1].length}>`); i++; continue; }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { flush(); out.push("<hr>"); i++; continue; }
      if (/^\s*&gt;/.test(line)) {
        flush();
        const quote = [];
        while (i < lines.length && /^\s*&gt;/.test(lines[i])) quote.push(lines[i++].replace(/^\s*&gt;\s?/, ""));
        out.push(`<blockquote>${render(unescapeForNesting(quote.join("\n")))}</blockquote>`);
        continue;
      }
      if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        flush();
        const [html, next] = list(lines, i);
        out.push(html);
        i = next;
        continue;
      }
      if (line.includes("|") && i + 1 < lines.length && isTableSep(lines[i + 1])) {
        flush();
        const head = cells(line);
        let html = "<div class=\"table\"><table><thead><tr>" + head.map((c) => `<th>${inline(c)}</th>`).join("") +
                   "</tr></thead><tbody>";
        i += 2;
        while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
          html += "<tr>" + cells(lines[i]).map((c) => `<td>${inline(c)}</td>`).join("") + "</tr>";
          i++;
        }
        out.push(html + "</tbody></table></div>");
        continue;
      }
      if (!line.trim()) { flush(); i++; continue; }
      para.push(line);
      i++;
    }
    flush();
    return out.join("");
  }

  // a block quote's inner text is rendered again: undo the escaping first (it is re-escaped)
  function unescapeForNesting(s) {
    return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, "\"").replace(/&#39;/g, "'")
      .replace(/&amp;/g, "&");
  }

  return { render, escapeHtml };
})();
