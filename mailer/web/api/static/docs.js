// mailer's own start of Swagger UI for /api/v1/docs (no inline script: the page's CSP is
// script-src 'self'). The document's URL is the data-spec attribute of #docs.
(function () {
  "use strict";
  function start() {
    var node = document.getElementById("docs");
    window.ui = window.SwaggerUIBundle({
      url: node.getAttribute("data-spec"),
      domNode: node,
      deepLinking: true,
      persistAuthorization: false,
      tryItOutEnabled: false,
      validatorUrl: null,
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
