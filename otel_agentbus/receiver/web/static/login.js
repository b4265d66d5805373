// The login page is served in place of the page asked for (401): come back to it after.
const next = document.getElementById("next");
const here = location.pathname + location.search + location.hash;
if (next instanceof HTMLInputElement && here.startsWith("/") && !here.startsWith("//")
    && location.pathname !== "/login") {
  next.value = here;
}
