function (doc) {
  // Every attempt by the time it ended, with what `picas report` draws:
  // [duration, peak memory in KiB, host, outcome, signature, CPU seconds].
  if (doc.type == "token" && doc.attempts) {
    for (var i = 0; i < doc.attempts.length; i++) {
      var a = doc.attempts[i];
      var cpu = (a.cpu_user_s || 0) + (a.cpu_sys_s || 0);
      emit(a.end || 0, [a.duration, a.max_rss_kib === undefined ? null : a.max_rss_kib,
                        a.host || "", a.outcome, a.signature || "",
                        a.cpu_user_s === undefined ? null : cpu]);
    }
  }
}
