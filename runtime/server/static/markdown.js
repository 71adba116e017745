// markdown.js — a small, safe Markdown renderer for chat replies.
// Safety first: the text is HTML-escaped before any markup is added, links are only
// http(s)/mailto, and nothing from the text ever becomes an attribute other than an
// escaped href. Supports fenced code blocks, inline code, headings, bold/italic/strike,
// lists (nested by indent), block quotes, tables, rules and links.
"use strict";

const Markdown = (() => {
  const escapeHtml = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");

  // inline markup on already-escaped text; code spans are cut out first so nothing inside changes
  function inline(text) {
    const codes = [];
    text = text.replace(/`([^`\n]+)`/g, (_, c) => { codes.push(c); return `\u0000${codes.length - 1}\u0000`; });
    text = text.replace(/\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)[^\s)]+)\)/g,
      (_, label, href) => `<a href="${href}" target="_blank" rel="noopener noreferrer">${label}</a>`);
    text = text.replace(/(^|[\s(])((?:https?:\/\/)[^\s<)]+[^\s<).,;:!?'"])/g,
      (_, pre, href) => `${pre}<a href="${href}" target="_blank" rel="noopener noreferrer">${href}</a>`);
    text = text.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/__([^_\n]+)__/g, "<strong>$1</strong>")
      .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
      .replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>")
      .replace(/~~([^~\n]+)~~/g, "<del>$1</del>");
    return text.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[+i]}</code>`);
  }

  const isTableSep = (line) => /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/.test(line);
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
      let body = m[3];
      i++;
      while (i < lines.length && lines[i].trim() && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i])
             && /^\s{2,}/.test(lines[i])) {
        body += " " + lines[i].trim();
        i++;
      }
      const task = body.match(/^\[( |x)\]\s+(.*)$/i);
      html += task ? `<li class="task"><input type="checkbox" disabled${task[1] !== " " ? " checked" : ""}> ${inline(task[2])}</li>`
                   : `<li>${inline(body)}</li>`;
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
      const fence = line.match(/^\s*(```|~~~)\s*([\w+#.-]*)\s*$/);
      if (fence) {
        flush();
        const code = [];
        i++;
        while (i < lines.length && !new RegExp("^\\s*" + fence[1] + "\\s*$").test(lines[i])) code.push(lines[i++]);
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
