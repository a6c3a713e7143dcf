#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the fixture cases in crates/gantry-pipeline/tests/fixtures.
#   yaml_load:  every `#### file: …` section of every case
#   lint:       the `#### file: .gitlab-ci.yml` section of every case
#   expr_parse: every `if:` expression in those files, plus a few hand-written ones
# Existing corpus files are kept (the corpus grows as the fuzzer runs); seeds are named
# after their case so re-seeding overwrites rather than duplicates them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fixtures="$here/../crates/gantry-pipeline/tests/fixtures"
corpus="$here/corpus"
mkdir -p "$corpus/yaml_load" "$corpus/lint" "$corpus/expr_parse"

for case in "$fixtures"/*.case; do
    base="$(basename "$case" .case)"
    # Split the case into its sections: seed-<case>--<n>--<file name with / and : as _>.
    awk -v out="$corpus/yaml_load" -v lint="$corpus/lint" -v base="$base" '
        /^#### / {
            if (f != "") close(f)
            f = ""; g = ""
            if ($0 ~ /^#### file: /) {
                name = substr($0, 12); n++
                safe = name; gsub(/[\/:]/, "_", safe)
                f = out "/seed-" base "--" n "--" safe
                printf "" > f
                if (name == ".gitlab-ci.yml") { g = lint "/seed-" base; printf "" > g }
            }
            next
        }
        f != "" { print >> f; if (g != "") print >> g }
    ' "$case"
done

# Expressions: the value of every `if:` key in the seeded files, unquoted once.
n=0
grep -h -E '^\s*-?\s*if:\s' "$corpus"/yaml_load/seed-* 2>/dev/null \
    | sed -E 's/^\s*-?\s*if:\s*//' \
    | sed -E "s/^'(.*)'\$/\\1/; s/^\"(.*)\"\$/\\1/" \
    | sort -u \
    | while IFS= read -r e; do
        n=$((n + 1))
        printf '%s' "$e" > "$corpus/expr_parse/seed-fixture-$n"
    done

# Hand-written expressions covering every token kind and the documented quirks.
i=0
while IFS= read -r e; do
    i=$((i + 1))
    printf '%s' "$e" > "$corpus/expr_parse/seed-doc-$i"
done <<'EXPRS'
$CI_COMMIT_BRANCH == "main" && $DEPLOY
$CI_PIPELINE_SOURCE == "merge_request_event" || $CI_COMMIT_TAG
$UNSET == null
$EMPTY == ''
$EMPTY || $SET
$EMPTY && $SET
$CI_COMMIT_BRANCH =~ /^(main|release\/.*)$/i
$CI_COMMIT_TAG !~ /^v\d+\.\d+/
"23" =~ "1234"
$PATTERN =~ $CI_COMMIT_BRANCH
($A == "x" || $B != 'y') && ($C =~ /a.c/msU)
$A != null && ($B == "1" || ($C && !$D))
${VAR} == "x"
%VAR% == "x"
$[[ inputs.env ]] == "prod"
$A = "x"
$A & $B
/ab/
"unterminated
EXPRS
# Inputs at the budgets, so libFuzzer's length limit starts above them: 99 and 101 expression
# tokens, nesting just under and over YAML's depth limit, an alias bomb, merge-key chains.
# shellcheck disable=SC2016 # a literal `$A`, not an expansion
tokens() { local n=$1 out='$A'; for ((k = 1; k < n; k += 2)); do out+=' && $A'; done; printf '%s' "$out"; }
tokens 99 > "$corpus/expr_parse/seed-limit-99-tokens"
tokens 101 > "$corpus/expr_parse/seed-limit-101-tokens"
printf '%s' "$(printf '(%.0s' {1..40})\$A$(printf ')%.0s' {1..40})" > "$corpus/expr_parse/seed-limit-parens"
nest() { printf 'a: '; printf '[%.0s' $(seq "$1"); printf 'x'; printf ']%.0s' $(seq "$1"); echo; }
nest 99 > "$corpus/yaml_load/seed-limit-depth-99"
nest 101 > "$corpus/yaml_load/seed-limit-depth-101"
{
    prev=a; echo 'a: &a [x, x, x, x, x, x, x, x, x, x]'
    for l in b c d e f g h; do
        echo "$l: &$l [*$prev, *$prev, *$prev, *$prev, *$prev, *$prev, *$prev, *$prev, *$prev, *$prev]"
        prev=$l
    done
} > "$corpus/yaml_load/seed-limit-alias-bomb"
cat > "$corpus/yaml_load/seed-merge-chain" <<'YAML'
.a: &a {image: alpine, retry: 1}
.b: &b {<<: *a, tags: [x]}
.c: &c
  <<: [*a, *b]
  script: [echo]
job:
  <<: *c
  stage: test
YAML
cp "$corpus/yaml_load/seed-limit-alias-bomb" "$corpus/lint/seed-limit-alias-bomb"
cp "$corpus/yaml_load/seed-merge-chain" "$corpus/lint/seed-merge-chain"
printf 'job:\n  script: echo\n  rules:\n    - if: %s\n' "$(tokens 99)" > "$corpus/lint/seed-limit-rules-if"

count() { find "$corpus/$1" -type f | wc -l; }
echo "seeded: $(count yaml_load) yaml_load, $(count lint) lint, $(count expr_parse) expr_parse"
