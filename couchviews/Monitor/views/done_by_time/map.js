function (doc) {
  // Finished tokens (done or error) by the time they finished: the rate.
  if (doc.type == "token" && doc.lock > 0 && doc.done > 0) {
    emit(doc.done, 1);
  }
}
