#!/bin/sh
# greet: prints a greeting. The "program" the example pipeline builds, tests and packages.
name="${1:-world}"
case "$name" in
  "") echo "usage: greet NAME" >&2; exit 2 ;;
esac
printf 'Hello, %s!\n' "$name"
