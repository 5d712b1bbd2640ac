// The API explorer: Swagger UI over the store's cached schema. Every "Execute" is rewritten into a
// form post to our /explorer/call (CSRF token, the console's fields), so the browser never calls the
// store and never holds a token. A file, not inline code: the CSP allows none.
(function () {
  var root = document.getElementById("swagger-ui");
  if (!root) return;
  var confirmWrites = document.getElementById("confirm-writes");
  var basePath = root.dataset.basePath;

  function toConsoleForm(req) {
    var url = new URL(req.url, window.location.href);
    if (url.origin !== window.location.origin || url.pathname.indexOf(basePath + "/V1/") !== 0) {
      throw new Error("not an operation of this store's schema");
    }
    var params = [];
    url.searchParams.forEach(function (value, name) { params.push(name + "=" + value); });
    var form = new URLSearchParams();
    form.set("csrf_token", root.dataset.csrf);
    form.set("method", req.method.toUpperCase());
    form.set("path", url.pathname.slice((basePath + "/V1/").length));
    form.set("store_code", root.dataset.storeCode);
    form.set("params", params.join("\n"));
    form.set("body", typeof req.body === "string" ? req.body : "");
    if (confirmWrites && confirmWrites.checked) form.set("confirm", "y");
    req.url = root.dataset.callUrl;
    req.method = "POST";
    req.headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"};
    req.body = form.toString();
    req.credentials = "same-origin";
    return req;
  }

  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    filter: true,            // search box: operations by resource (tag)
    docExpansion: "list",
    tryItOutEnabled: false,
    requestInterceptor: function (req) {
      if (req.loadSpec || req.url.indexOf(root.dataset.specUrl) !== -1) return req;  // the schema itself
      return toConsoleForm(req);
    }
  });
})();
