# What ops/bench-worker and ops/bench-group share: a release build of packmeter ($pm), a
# scratch directory removed at exit ($work), and readers of a worker's /metrics on
# 127.0.0.1:PORT. Sourced from the repository's root.
swift build -c release --product packmeter >&2
pm=$(pwd)/.build/release/packmeter
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
now() { date +%s.%N; }
# A metric's value (summed over its label sets; nothing if the worker does not answer).
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { s += $2; n++ } END { if (n) printf "%s", s }'; }
records_done() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^packmeter_records_total/ { s += $2 } END { printf "%d", s }'; }
# Where billing stands: the sum of the owned partitions' next offsets (a restarted worker
# resumes from its checkpoints, so its own records_total starts at 0).
position() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^packmeter_partition_next_offset/ { s += $2 } END { printf "%d", s }'; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ]; }
