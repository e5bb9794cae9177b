#!/usr/bin/env bash
# Sourced by the tests that need a small trained model (tests/gguf, tests/serve).
# A corpus that a small model learns to continue without doubt: 20 fixed
# sentences over a small vocabulary, always in the same cyclic order, each
# document 6 of them from its own start (documents apart by blank lines).
#   write_corpus FILE
write_corpus() {
  awk 'BEGIN {
    split("the a one every some that this my", det, " ")
    split("cat dog bird fish horse mouse river tree stone cloud", noun, " ")
    split("sees finds likes follows watches carries", verb, " ")
    split("slowly quickly often never gladly", adv, " ")
    s = 7
    for (i = 0; i < 20; i++) {
      s = (s * 1103515245 + 12345) % 2147483648; d1 = det[1 + s % 8]
      s = (s * 1103515245 + 12345) % 2147483648; n1 = noun[1 + s % 10]
      s = (s * 1103515245 + 12345) % 2147483648; v = verb[1 + s % 6]
      s = (s * 1103515245 + 12345) % 2147483648; a = adv[1 + s % 5]
      s = (s * 1103515245 + 12345) % 2147483648; n2 = noun[1 + s % 10]
      line[i] = sprintf("%s %s %s %s the %s.", d1, n1, a, v, n2)
    }
    for (doc = 0; doc < 300; doc++) {
      for (l = 0; l < 6; l++) print line[(doc * 7 + l) % 20]
      printf "\n"
    }
  }' >"$1"
}
