function (doc) {
  // Tokens waiting for others to be done (picas/state.py): no pilot claims them.
  if (doc.type == "token" && doc.lock == -1 && doc.done == -2) {
    emit(doc._id, doc._id);
  }
}
