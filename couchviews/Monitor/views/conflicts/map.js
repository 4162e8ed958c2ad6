function (doc) {
  // Tokens that need picas recover: branches left by a cluster's split
  // writes, or a lock that a cluster never confirmed (picas/conflicts.py).
  if (doc.type != "token") {
    return;
  }
  if (doc._conflicts) {
    emit("conflicts", 1);
  } else if (doc.lock > 0 && doc.done == 0 && doc.lease && doc.lease.in_doubt) {
    emit("in_doubt", 1);
  }
}
