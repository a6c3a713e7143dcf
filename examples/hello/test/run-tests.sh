#!/bin/sh
# A tiny test runner: checks greet's output and writes a JUnit report.
set -u
bin="${1:?usage: run-tests.sh PATH/TO/greet}"
report="${2:-report.xml}"
pass=0; fail=0; cases=""
check() {
  name="$1"; expected="$2"; shift 2
  actual="$("$bin" "$@" 2>&1)"
  if [ "$actual" = "$expected" ]; then
    pass=$((pass + 1)); cases="$cases<testcase name=\"$name\"/>"
    echo "ok   $name"
  else
    fail=$((fail + 1)); cases="$cases<testcase name=\"$name\"><failure message=\"got: $actual\"/></testcase>"
    echo "FAIL $name: expected '$expected', got '$actual'"
  fi
}
check default  "Hello, world!"
check named    "Hello, Ada!" Ada
check spaces   "Hello, Grace Hopper!" "Grace Hopper"
printf '<?xml version="1.0"?><testsuite name="greet" tests="%s" failures="%s">%s</testsuite>\n' \
  "$((pass + fail))" "$fail" "$cases" > "$report"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
