// Sign-in helpers: copy the message, and sign with a browser wallet (EIP-1193
// window.ethereum, personal_sign) when there is one. Without a wallet, the page works with
// no script at all: prepare the message, sign it with `pcn audit sign`, paste the signature.
(function () {
  "use strict";

  function toHex(text) {
    var bytes = new TextEncoder().encode(text);
    var out = "0x";
    for (var i = 0; i < bytes.length; i++) { out += bytes[i].toString(16).padStart(2, "0"); }
    return out;
  }

  function showError(text) {
    var el = document.getElementById("login-error");
    if (el) { el.textContent = text; el.hidden = false; }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var wallet = document.getElementById("wallet");
    if (!wallet || !window.ethereum) { return; }
    wallet.hidden = false;
    wallet.addEventListener("click", function () {
      var account;
      window.ethereum.request({ method: "eth_requestAccounts" }).then(function (accounts) {
        account = accounts[0];
        return fetch("/auth/nonce?address=" + encodeURIComponent(account), { cache: "no-store" });
      }).then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) { throw new Error(body.error ? body.error.message : "cannot get a sign-in message"); }
          return body;
        });
      }).then(function (issued) {
        document.getElementById("address").value = issued.address;
        document.getElementById("message").value = issued.message;
        return window.ethereum.request({ method: "personal_sign", params: [toHex(issued.message), account] });
      }).then(function (signature) {
        document.getElementById("signature").value = signature;
        document.getElementById("login-form").submit();
      }).catch(function (err) {
        showError("The wallet did not sign: " + (err && err.message ? err.message : err));
      });
    });
  });
})();
