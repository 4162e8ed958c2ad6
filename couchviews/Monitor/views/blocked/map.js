function (doc) {
  // Waiting tokens that a parent in error or cancelled holds up, with those
  // parents: they go on once the parents are reset and done.
  if (doc.type == "token" && doc.lock == -1 && doc.done == -2 &&
      Array.isArray(doc.blocked_by) && doc.blocked_by.length > 0) {
    emit(doc._id, doc.blocked_by);
  }
}
