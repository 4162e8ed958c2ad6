function (doc) {
  var upstreamError = doc.lock == 99 && doc.done == 99;
  if (doc.type == "token" && doc.lock > 0 && doc.done > 0 &&
      (parseInt(doc.exit_code) !== 0 || upstreamError)) {
    var code = parseInt(doc.exit_code);
    emit(isNaN(code) ? String(doc.exit_code) : code, 1);
  }
}
