function (doc) {
  if (doc.type == "token" && doc.lock == -1 && doc.done == -1) {
    emit(doc._id, doc._id);
  }
}
