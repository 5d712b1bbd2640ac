// Passkeys (WebAuthn). The server makes the options and checks the answer; this file only carries them
// between it and the browser's authenticator. A button with data-options asks the server for options
// (POST, CSRF token from the form named by data-form), lets the authenticator answer, puts the answer
// in that form's "passkey" field and submits it. Hidden where the browser has no WebAuthn.
(function () {
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseRequestOptionsFromJSON) return;
  document.querySelectorAll(".passkey-choice").forEach(function (el) { el.hidden = false; });

  function fail(form, message) {
    var p = form.querySelector(".passkey-error");
    if (!p) {
      p = document.createElement("p");
      p.className = "error passkey-error";
      p.setAttribute("role", "alert");
      form.appendChild(p);
    }
    p.textContent = message;
  }

  function options(button, form) {
    return fetch(button.dataset.options, {
      method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": form.querySelector("input[name=csrf_token]").value}
    }).then(function (response) {
      if (!response.ok) throw new Error("The server refused (" + response.status + "). Reload and try again.");
      return response.json();
    });
  }

  function answer(form, credential) {
    form.querySelector("input[name=passkey]").value = JSON.stringify(credential.toJSON());
    HTMLFormElement.prototype.submit.call(form);  // form.submit is the "Continue" button, by name
  }

  document.querySelectorAll("button.passkey-get").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = document.getElementById(button.dataset.form);
      options(button, form).then(function (json) {
        return navigator.credentials.get({publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(json)});
      }).then(function (credential) { answer(form, credential); })
        .catch(function (error) { fail(form, "No passkey was used: " + error.message); });
    });
  });

  document.querySelectorAll("button.passkey-create").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = document.getElementById(button.dataset.form);
      options(button, form).then(function (json) {
        return navigator.credentials.create({publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(json)});
      }).then(function (credential) { answer(form, credential); })
        .catch(function (error) { fail(form, "No passkey was added: " + error.message); });
    });
  });
})();
