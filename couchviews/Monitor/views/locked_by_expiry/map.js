function (doc) {
  // Locked tokens by the time their lease ends; upstream locks have none.
  if (doc.type == "token" && doc.lock > 0 && doc.done == 0 &&
      doc.lease && typeof doc.lease.expires === "number") {
    emit(doc.lease.expires, doc.lease.pilot);
  }
}
