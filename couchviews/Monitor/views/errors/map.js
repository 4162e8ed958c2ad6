function (doc) {
  // Error tokens by exit code, the signature of their last failure
  // (picas/triage.py) and the host it failed on: `picas errors`.
  var upstreamError = doc.lock == 99 && doc.done == 99;
  if (doc.type == "token" && doc.lock > 0 && doc.done > 0 &&
      (parseInt(doc.exit_code) !== 0 || upstreamError)) {
    var code = parseInt(doc.exit_code);
    var last = null;
    var attempts = doc.attempts || [];
    for (var i = attempts.length - 1; i >= 0 && last === null; i--) {
      if (!attempts[i].late) { last = attempts[i]; }
    }
    var signature = (last && last.signature) || "";
    var host = (last && last.host) || doc.hostname || "";
    emit([isNaN(code) ? String(doc.exit_code) : code, signature, host], 1);
  }
}
