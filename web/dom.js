// The one DOM-building helper the page's modules share. Device strings only ever reach the page
// as text nodes, `textContent` or attribute values: nothing here parses HTML.

/** A DOM element with `class`, `text` and attributes, and its children (empty ones skipped). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === '') continue;
    node.append(child); // strings become text nodes
  }
  return node;
}
