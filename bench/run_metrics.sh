# Shared by the MPI benchmarks (sourced): the defaults every run takes, and
# reading a run's metrics.jsonl.
MEMOE=${MEMOE:-build/memoe}
CONFIG=${CONFIG:-configs/small.json}
DATA=${DATA:-runs/demo/data}
STEPS=${STEPS:-10}
SEQ=${SEQ:-256}
# The median of the numbers on stdin (0 for none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# A metric of every step after the first two: metric FILE KEY.
metric() { { grep -o "\"$2\":[0-9.e+-]*" "$1" || true; } | cut -d: -f2 | tail -n +3; }
