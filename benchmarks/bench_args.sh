# Sourced by the benchmark scripts: the arguments they share. bench_args USAGE ARGS... reads
# REPEATS (a whole number) into $repeats, --json FILE into $json and, where the script lists words
# in $bench_words, one of them into $bench_word; anything else prints "usage: USAGE" and exits 2.
# $repeats and $bench_word keep the values set before the call when not given.
bench_args() {
  local usage=$1
  shift
  json=""
  while (($#)); do
    if [[ $1 == --json && $# -ge 2 && -n $2 ]]; then
      json=$2
      shift 2
      continue
    elif [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]]; then
      repeats=$1
    elif [[ -n ${bench_words:-} && " $bench_words " == *" $1 "* ]]; then
      bench_word=$1
    else
      echo "usage: $usage" >&2
      exit 2
    fi
    shift
  done
}
