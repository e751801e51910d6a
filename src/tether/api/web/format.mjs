// Pure text helpers: HTML escaping, stream offsets, JSON and times for display.

export function esc(s) {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

/** Position in a stream offset token ("0000000000000000_0000000000000042" -> 42). */
export function offsetPos(offset) {
  if (!offset || offset === "-1") return 0;
  const i = offset.indexOf("_");
  return Number(i < 0 ? offset : offset.slice(i + 1));
}

export function formatOffset(pos) {
  return "0000000000000000_" + String(pos).padStart(16, "0");
}

export function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function timeAgo(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}
