function (doc) {
  if (doc.type != "token") {
    return;
  }
  var upstreamError = doc.lock == 99 && doc.done == 99;
  if (doc.lock == 0 && doc.done == 0) {
    emit("todo", 1);
  } else if (doc.lock > 0 && doc.done == 0) {
    emit("locked", 1);
  } else if (doc.lock > 0 && doc.done > 0) {
    emit(parseInt(doc.exit_code) === 0 && !upstreamError ? "done" : "error", 1);
  } else if (doc.lock == -1 && doc.done == 0) {
    emit("held", 1);
  } else if (doc.lock == -1 && doc.done == -1) {
    emit("cancelled", 1);
  } else if (doc.lock == -1 && doc.done == -2) {
    emit("waiting", 1);
  }
}
