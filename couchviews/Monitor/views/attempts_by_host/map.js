function (doc) {
  // Every attempt (late ones too: they ran) by host and outcome:
  // the failure rate per host in `picas status`.
  if (doc.type == "token" && doc.attempts) {
    for (var i = 0; i < doc.attempts.length; i++) {
      var attempt = doc.attempts[i];
      emit([attempt.host || "", attempt.outcome], 1);
    }
  }
}
