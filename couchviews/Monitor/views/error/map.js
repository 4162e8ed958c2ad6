function (doc) {
  // Upstream PiCaS marks failures with lock = done = 99 and may leave
  // exit_code as "" (parseInt gives NaN, which is not 0).
  var upstreamError = doc.lock == 99 && doc.done == 99;
  if (doc.type == "token" && doc.lock > 0 && doc.done > 0 &&
      (parseInt(doc.exit_code) !== 0 || upstreamError)) {
    emit(doc._id, doc._id);
  }
}
