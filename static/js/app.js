// The confirm dialogs of the API keys and team pages (their templates load this file). The Content-Security-Policy
// (config/settings.py) allows scripts from static files only: no inline <script>, no onsubmit= attributes.

// A form with data-confirm="question" asks before it is sent (revoking or rotating a key, removing a member).
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
