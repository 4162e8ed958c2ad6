function (doc) {
  // Highest priority first: the key is the negated priority.
  if (doc.type == "token" && doc.lock == 0 && doc.done == 0) {
    var priority = Number(doc.priority) || 0;
    emit(-priority, null);
  }
}
