// An uncompressed POSIX ustar archive of a few regular files, made in the browser (a build's
// context for POST /templates/build): a 512-byte header per file, its data padded to 512 bytes,
// two zero blocks at the end. Names are kept to the header's 100 bytes (no prefix field).

const BLOCK = 512;
const MAX_SIZE = 8 ** 11 - 1; // 11 octal digits

const enc = new TextEncoder();

function put(header, offset, length, text) {
  const bytes = enc.encode(text);
  if (bytes.length > length) throw new Error(`tar: ${JSON.stringify(text)} does not fit its field`);
  header.set(bytes, offset);
}

// an octal number, zero-padded to `length - 1` digits and NUL-terminated
const octal = (n, length) => n.toString(8).padStart(length - 1, "0") + "\0";

// The checks a name must pass: relative, no "..", no empty part, at most 100 bytes of UTF-8.
export function checkName(name) {
  const size = enc.encode(name).length;
  if (!name) throw new Error("a file in the archive needs a name");
  if (size > 100) throw new Error(`the file name "${name}" is ${size} bytes long: at most 100 bytes fit in the archive`);
  if (name.startsWith("/") || name.split("/").some((p) => p === "" || p === "." || p === "..")) {
    throw new Error(`the file name "${name}" must be a relative path, without "." or ".." parts`);
  }
  if (name.includes("\0")) throw new Error(`the file name "${name}" has a NUL byte`);
}

export function header(name, size, mtime = Math.floor(Date.now() / 1000)) {
  checkName(name);
  if (!Number.isInteger(size) || size < 0 || size > MAX_SIZE) throw new Error(`"${name}" is too large for the archive`);
  const h = new Uint8Array(BLOCK);
  put(h, 0, 100, name);
  put(h, 100, 8, octal(0o644, 8)); // mode
  put(h, 108, 8, octal(0, 8)); // uid
  put(h, 116, 8, octal(0, 8)); // gid
  put(h, 124, 12, octal(size, 12));
  put(h, 136, 12, octal(mtime, 12));
  put(h, 148, 8, "        "); // the checksum counts its own field as spaces
  put(h, 156, 1, "0"); // a regular file
  put(h, 257, 6, "ustar\0");
  put(h, 263, 2, "00");
  put(h, 329, 8, octal(0, 8)); // devmajor
  put(h, 337, 8, octal(0, 8)); // devminor
  const sum = h.reduce((a, b) => a + b, 0);
  put(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

// files: [{ name, data }] where data is a string (UTF-8), a Uint8Array or a Blob/File.
// Resolves to a Blob of the archive; throws on a bad or repeated name before reading anything.
export function tar(files) {
  const seen = new Set();
  for (const f of files) {
    checkName(f.name);
    if (seen.has(f.name)) throw new Error(`"${f.name}" is in the archive twice`);
    seen.add(f.name);
  }
  const parts = [];
  for (const f of files) {
    const data = typeof f.data === "string" ? enc.encode(f.data) : f.data;
    const size = data instanceof Blob ? data.size : data.length;
    parts.push(header(f.name, size), data);
    if (size % BLOCK) parts.push(new Uint8Array(BLOCK - (size % BLOCK)));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  return new Blob(parts, { type: "application/x-tar" });
}
