function (doc) {
  if (doc.type != "token") {
    return;
  }
  var state = null;
  var upstreamError = doc.lock == 99 && doc.done == 99;
  if (doc.lock == 0 && doc.done == 0) {
    state = "todo";
  } else if (doc.lock > 0 && doc.done == 0) {
    state = "locked";
  } else if (doc.lock > 0 && doc.done > 0) {
    state = parseInt(doc.exit_code) === 0 && !upstreamError ? "done" : "error";
  } else if (doc.lock == -1 && doc.done == 0) {
    state = "held";
  } else if (doc.lock == -1 && doc.done == -1) {
    state = "cancelled";
  } else if (doc.lock == -1 && doc.done == -2) {
    state = "waiting";
  }
  var tags = Array.isArray(doc.tags) ? doc.tags : [];
  if (state !== null) {
    for (var i = 0; i < tags.length; i++) {
      emit([String(tags[i]), state], 1);
    }
  }
}
