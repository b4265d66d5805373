// The login page answers in place of the page asked for (401), or at /login?next=…&failed=1
// after a wrong token: send the browser back where it wanted to go.
const next = document.getElementById("next");
const params = new URLSearchParams(location.search);
const asked = location.pathname === "/login"
  ? params.get("next") || "/runs"
  : location.pathname + location.search + location.hash;
if (next instanceof HTMLInputElement && asked.startsWith("/") && !asked.startsWith("//")) {
  next.value = asked;
}
const failed = document.getElementById("failed");
if (failed && location.pathname === "/login" && params.get("failed")) failed.hidden = false;
